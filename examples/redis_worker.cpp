// From one process to many machines: the same pool, fed by a Redis Streams consumer group.
//
// Run a server (e.g. `redis-server --port 6379`), then, in as many terminals or on as many
// machines as you like:
//   redis_worker consume NAME [HOST PORT]   process "jobs" as consumer NAME of group "workers"
//   redis_worker produce N [HOST PORT]      append N jobs to the stream "jobs"
// Each consumer holds at most 64 entries; the backlog stays in Redis. Kill one with SIGKILL: after
// 5 s the others claim what it left pending. Jobs whose "url" ends in "/broken" fail for good and
// end in the stream "jobs:dead". Ctrl-C stops a consumer cleanly: unfinished entries stay pending.

#include <workerpool/redis/stream_consumer.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace wr = workerpool::redis;
using namespace std::chrono_literals;

namespace {

int produce(int n, const wr::consumer_options& where) {
    wr::detail::connection c(where.host, where.port, 2s, 5s);
    if (!c.ok()) {
        std::fprintf(stderr, "cannot connect: %s\n", c.error().c_str());
        return 1;
    }
    for (int i = 0; i < n; ++i) {
        const std::string url =
            "https://example.com/" + (i % 50 == 49 ? std::string("broken") : std::to_string(i));
        (void)c.append({"XADD", where.stream, "*", "url", url});
    }
    for (int i = 0; i < n; ++i) {
        if (auto r = c.reply(); r == nullptr || wr::detail::is_error(r.get())) {
            std::fprintf(stderr, "XADD failed\n");
            return 1;
        }
    }
    std::printf("appended %d jobs to %s\n", n, where.stream.c_str());
    return 0;
}

int consume(wr::consumer_options o) {
    sigset_t stop_signals;  // taken by sigwait below; blocked before any thread starts
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    o.group = "workers";
    o.create_group = true;
    o.max_in_flight = 64;
    o.claim_idle = 5s;
    o.max_deliveries = 5;  // an entry that crashed five consumers is dead-lettered, not run again
    o.pool.max_workers = 8;
    o.pool.default_timeout = 2s;
    o.pool.retry.max_attempts = 3;
    o.on_event = [](const wr::consumer_event& e) {
        if (e.kind == wr::consumer_event_kind::disconnected) {
            std::fprintf(stderr, "disconnected: %.*s\n", static_cast<int>(e.detail.size()),
                         e.detail.data());
        } else if (e.kind == wr::consumer_event_kind::claimed) {
            std::printf("claimed %zu entries from a consumer that went away\n", e.count);
        }
    };
    wr::stream_consumer consumer(
        [](wr::stream_entry& job, const std::stop_token& stop) {
            const std::string* url = job.find("url");
            if (url == nullptr || url->ends_with("/broken")) {
                throw workerpool::permanent_error("no usable url");  // straight to jobs:dead
            }
            for (int step = 0; step < 10 && !stop.stop_requested(); ++step) {
                std::this_thread::sleep_for(1ms);  // the "fetch"
            }
        },
        o);
    std::printf("consumer %s reading %s (Ctrl-C to stop)\n", o.consumer.c_str(), o.stream.c_str());

    std::jthread reporter([&](std::stop_token st) {
        while (!st.stop_requested()) {
            std::this_thread::sleep_for(1s);
            const wr::consumer_stats s = consumer.stats();
            std::printf(
                "read %llu  claimed %llu  acknowledged %llu  dead %llu  in flight %zu  "
                "workers %zu\n",
                static_cast<unsigned long long>(s.read), static_cast<unsigned long long>(s.claimed),
                static_cast<unsigned long long>(s.acknowledged),
                static_cast<unsigned long long>(s.dead_lettered), s.in_flight, s.pool.workers);
        }
    });
    int sig = 0;
    sigwait(&stop_signals, &sig);
    reporter.request_stop();
    const wr::consumer_stop_report r = consumer.stop(5s);
    std::printf("stopped: %zu entries left pending for others, %zu unacknowledged\n",
                r.left_pending, r.unacknowledged);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 2 ? argv[1] : "";
    if ((mode != "consume" && mode != "produce") || (argc != 3 && argc != 5)) {
        std::fprintf(stderr,
                     "usage: %s consume NAME [HOST PORT]\n       %s produce N [HOST PORT]\n",
                     argv[0], argv[0]);
        return 2;
    }
    wr::consumer_options o;
    o.stream = "jobs";
    if (argc == 5) {
        o.host = argv[3];
        o.port = std::atoi(argv[4]);
    }
    try {
        if (mode == "produce") {
            return produce(std::atoi(argv[2]), o);
        }
        o.consumer = argv[2];
        return consume(std::move(o));
    } catch (const std::exception& e) {  // a bad address, a bad option
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
