// From one process to many machines: the same pool, fed by a Redis Streams consumer group.
//
// Run a server, then, in as many terminals or on as many machines as you like:
//   redis_worker consume NAME [HOST PORT]   process "jobs" as consumer NAME of group "workers"
//   redis_worker produce N [HOST PORT]      append N jobs to the stream "jobs"
//   redis_worker wait [HOST PORT]           wait until group "workers" has finished every job
// Each consumer holds at most 64 entries; the backlog stays in Redis. Kill one with SIGKILL: after
// 5 s the others claim what it left pending. Jobs whose "url" ends in "/broken" fail for good and
// end in the stream "jobs:dead". Ctrl-C (or SIGTERM) stops a consumer cleanly: unfinished
// entries stay pending. With REDIS_PASSWORD (and REDIS_USERNAME) set, every connection sends
// AUTH. Output is line-buffered, so a consumer's log shows each line as it happens even when
// redirected to a file.

#include <workerpool/redis/stream_consumer.hpp>
#include <workerpool/redis/stream_producer.hpp>

#include <hiredis/hiredis.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace wr = workerpool::redis;
using namespace std::chrono_literals;

namespace {

struct server {
    std::string host = "127.0.0.1";
    int port = 6379;
    std::string username;
    std::string password;
};

// Points consumer_options or producer_options at `where`.
template <class Options>
Options aimed_at(const server& where) {
    Options o;
    o.host = where.host;
    o.port = where.port;
    o.username = where.username;
    o.password = where.password;
    o.stream = "jobs";
    return o;
}

int produce(int n, const server& where) {
    const auto po = aimed_at<wr::producer_options>(where);
    wr::stream_producer producer(po);
    std::vector<wr::stream_producer::fields> batch;
    for (int i = 0; i < n; ++i) {
        const std::string url =
            "https://example.com/" + (i % 50 == 49 ? std::string("broken") : std::to_string(i));
        batch.push_back({{"url", url}});
        if (batch.size() == 1000 || i + 1 == n) {
            (void)producer.add_batch(batch);  // one round trip per 1000 jobs
            batch.clear();
        }
    }
    std::printf("appended %d jobs to jobs\n", n);
    return 0;
}

// Prints at most one line per second per kind of event, with how many were left out.
class rate_limited_log {
public:
    void print(const char* what, std::string_view detail) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < 1s) {
            ++skipped_;
            return;
        }
        std::fprintf(stderr, "%s: %.*s", what, static_cast<int>(detail.size()), detail.data());
        if (skipped_ > 0) {
            std::fprintf(stderr, " (and %zu more in the last second)", skipped_);
        }
        std::fprintf(stderr, "\n");
        last_ = now;
        skipped_ = 0;
    }

private:
    std::chrono::steady_clock::time_point last_{};
    std::size_t skipped_ = 0;
};

int consume(const std::string& name, const server& where) {
    sigset_t stop_signals;  // taken by sigwait below; blocked before any thread starts
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    auto o = aimed_at<wr::consumer_options>(where);
    o.group = "workers";
    o.consumer = name;
    o.create_group = true;
    o.max_in_flight = 64;
    o.claim_idle = 5s;
    o.max_deliveries = 5;  // an entry that crashed five consumers is dead-lettered, not run again
    o.pool.max_workers = 8;
    o.pool.default_timeout = 2s;
    o.pool.retry.max_attempts = 3;
    // Called on the consumer's reader thread only: the logs need no lock.
    rate_limited_log errors;
    rate_limited_log dead_letter_errors;
    o.on_event = [&](const wr::consumer_event& e) {
        switch (e.kind) {
        case wr::consumer_event_kind::disconnected:
            std::fprintf(stderr, "disconnected: %.*s\n", static_cast<int>(e.detail.size()),
                         e.detail.data());
            break;
        case wr::consumer_event_kind::connected:
            std::fprintf(stderr, "connected again (reconnection %zu)\n", e.count);
            break;
        case wr::consumer_event_kind::claimed:
            std::printf("claimed %zu entries from a consumer that went away\n", e.count);
            break;
        case wr::consumer_event_kind::redis_error:
            errors.print("redis error", e.detail);
            break;
        case wr::consumer_event_kind::dead_letter_failed:
            dead_letter_errors.print("dead letter not written (the entry stays pending)", e.detail);
            break;
        case wr::consumer_event_kind::dead_lettered:
            break;
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
    std::printf("consumer %s reading jobs (Ctrl-C to stop)\n", name.c_str());

    std::jthread reporter([&](std::stop_token st) {
        while (!st.stop_requested()) {
            std::this_thread::sleep_for(1s);
            if (st.stop_requested()) {
                break;  // stopping: the last line is "stopped: ..."
            }
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

// The value of `key` in a flat [key, value, ...] reply, or null.
const redisReply* field(const redisReply* r, const std::string& key) {
    for (std::size_t i = 0; r != nullptr && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements;
         i += 2) {
        if (r->element[i]->str != nullptr && key == r->element[i]->str) {
            return r->element[i + 1];
        }
    }
    return nullptr;
}

// Waits until group "workers" has been handed every job of "jobs" and has none pending: plain
// hiredis, XINFO STREAM and XINFO GROUPS once a second, for two minutes at most.
int wait_until_done(const server& where) {
    for (int second = 0; second < 120; ++second) {
        redisContext* c = redisConnect(where.host.c_str(), where.port);
        if (c != nullptr && c->err == 0 && !where.password.empty()) {
            freeReplyObject(where.username.empty()
                                ? redisCommand(c, "AUTH %s", where.password.c_str())
                                : redisCommand(c, "AUTH %s %s", where.username.c_str(),
                                               where.password.c_str()));
        }
        auto* stream = c != nullptr && c->err == 0
                           ? static_cast<redisReply*>(redisCommand(c, "XINFO STREAM jobs"))
                           : nullptr;
        auto* groups = c != nullptr && c->err == 0
                           ? static_cast<redisReply*>(redisCommand(c, "XINFO GROUPS jobs"))
                           : nullptr;
        const redisReply* last = field(stream, "last-generated-id");
        const redisReply* length = field(stream, "length");
        const redisReply* group = nullptr;
        for (std::size_t g = 0;
             groups != nullptr && groups->type == REDIS_REPLY_ARRAY && g < groups->elements; ++g) {
            const redisReply* name = field(groups->element[g], "name");
            if (name != nullptr && name->str != nullptr && std::string(name->str) == "workers") {
                group = groups->element[g];
            }
        }
        const redisReply* delivered = field(group, "last-delivered-id");
        const redisReply* pending = field(group, "pending");
        const bool done = last != nullptr && delivered != nullptr && pending != nullptr &&
                          std::string(last->str) == delivered->str && pending->integer == 0;
        if (done) {
            std::printf("all %lld jobs done\n", length != nullptr ? length->integer : 0LL);
        }
        freeReplyObject(stream);
        freeReplyObject(groups);
        redisFree(c);
        if (done) {
            return 0;
        }
        std::this_thread::sleep_for(1s);
    }
    std::fprintf(stderr, "jobs not done after 120 s\n");
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a line at a time, also into a file or a pipe
    const std::string mode = argc > 1 ? argv[1] : "";
    const int args = mode == "wait" ? 2 : 3;  // arguments before HOST PORT
    if ((mode != "consume" && mode != "produce" && mode != "wait") ||
        (argc != args && argc != args + 2)) {
        std::fprintf(stderr,
                     "usage: %s consume NAME [HOST PORT]\n       %s produce N [HOST PORT]\n"
                     "       %s wait [HOST PORT]\n",
                     argv[0], argv[0], argv[0]);
        return 2;
    }
    server where;
    if (argc == args + 2) {
        where.host = argv[args];
        where.port = std::atoi(argv[args + 1]);
    }
    if (const char* p = std::getenv("REDIS_PASSWORD")) {
        where.password = p;
    }
    if (const char* u = std::getenv("REDIS_USERNAME")) {
        where.username = u;
    }
    try {
        if (mode == "produce") {
            return produce(std::atoi(argv[2]), where);
        }
        if (mode == "wait") {
            return wait_until_done(where);
        }
        return consume(argv[2], where);
    } catch (const std::exception& e) {  // a bad address, refused credentials, a bad option
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
