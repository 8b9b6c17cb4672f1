// End-to-end throughput of the Redis Streams consumer on loopback, side by side with its ceiling.
// Each round appends N entries to a fresh stream and times until every one is acknowledged, twice:
// once by K `stream_consumer`s (each its own connection, reader thread and pool, in this one
// process, a handler that does nothing), once by K raw hiredis loops (redis_raw_loop.hpp:
// XREADGROUP COUNT <batch>, XACK pipelined with the next read, no pool). Rounds alternate which
// goes first, so both see the same machine; the ratio consumer / raw is the integration's
// overhead (reads, parsing, submits, acknowledgements), not a network's. Each run also reports
// the CPU time it took per entry, in this process (getrusage: every thread of it) and in the
// server (INFO cpu): on a shared machine the rates swing with the neighbours' load, the CPU
// times much less.
//
// usage: bench_redis PORT [N=200000] [CONSUMERS=1] [BATCH=100] [REPEATS=3]
// Prints one line per round, the medians and the ratio. scripts/redis-throughput.sh starts a
// server.

#include <workerpool/redis/stream_consumer.hpp>
#include <workerpool/redis/stream_producer.hpp>

#include "redis_raw_loop.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace wr = workerpool::redis;
using clock_type = std::chrono::steady_clock;

namespace {

struct setup {
    int port;
    long n;
    int consumers;
    std::size_t batch;
};

// One timed run: entries per second, and CPU microseconds per entry here and in the server.
struct result {
    double rate = 0;
    double client_us = 0;
    double server_us = 0;
};

double process_cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// used_cpu_user + used_cpu_sys of the server, from INFO cpu.
double server_cpu_seconds(int port) {
    redisContext* c = redisConnect("127.0.0.1", port);
    auto* r = c != nullptr && c->err == 0 ? static_cast<redisReply*>(redisCommand(c, "INFO cpu"))
                                          : nullptr;
    double total = 0;
    if (r != nullptr && r->type == REDIS_REPLY_STRING) {
        const std::string info(r->str, r->len);
        for (const char* key : {"used_cpu_user:", "used_cpu_sys:"}) {
            const std::size_t at = info.find(key);
            if (at != std::string::npos) {
                total += std::atof(info.c_str() + at + std::string(key).size());
            }
        }
    }
    freeReplyObject(r);
    redisFree(c);
    return total;
}

// Runs `work` (which returns its own elapsed seconds) and measures around it.
template <class Work>
result measure(const setup& s, Work work) {
    const double client0 = process_cpu_seconds();
    const double server0 = server_cpu_seconds(s.port);
    const double seconds = work();
    const double per_entry = 1e6 / static_cast<double>(s.n);
    result out;
    out.rate = static_cast<double>(s.n) / seconds;
    out.client_us = (process_cpu_seconds() - client0) * per_entry;
    out.server_us = (server_cpu_seconds(s.port) - server0) * per_entry;
    return out;
}

// Runs one command on a fresh connection (set-up and clean-up only).
void admin(const setup& s, std::vector<const char*> argv) {
    redisContext* c = redisConnect("127.0.0.1", s.port);
    void* r = c != nullptr && c->err == 0
                  ? redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), nullptr)
                  : nullptr;
    if (r == nullptr) {
        std::fprintf(stderr, "bench_redis: %s failed on 127.0.0.1:%d\n", argv[0], s.port);
        std::exit(1);
    }
    freeReplyObject(r);
    redisFree(c);
}

// A fresh stream holding `n` entries and a group "g" at its start.
std::string fill(const setup& s, const std::string& name) {
    admin(s, {"XGROUP", "CREATE", name.c_str(), "g", "0", "MKSTREAM"});
    wr::producer_options po;
    po.port = s.port;
    po.stream = name;
    wr::stream_producer producer(po);
    constexpr long chunk = 10000;
    std::vector<wr::stream_producer::fields> entries;
    for (long done = 0; done < s.n; done += chunk) {
        entries.clear();
        for (long i = done; i < std::min(s.n, done + chunk); ++i) {
            entries.push_back(
                {{"n", std::to_string(i)}, {"payload", "0123456789abcdef0123456789abcdef"}});
        }
        (void)producer.add_batch(entries);
    }
    return name;
}

void drop(const setup& s, const std::string& name) {
    admin(s, {"DEL", name.c_str()});
}

// Seconds until K consumers acknowledged every entry (their start included; stopping not).
double consumer_seconds(const setup& s, const std::string& stream) {
    const auto t0 = clock_type::now();
    std::vector<std::unique_ptr<wr::stream_consumer>> group;
    for (int i = 0; i < s.consumers; ++i) {
        wr::consumer_options o;
        o.port = s.port;
        o.stream = stream;
        o.group = "g";
        o.consumer = "bench-" + std::to_string(i);
        o.batch = s.batch;
        o.claim_idle = std::chrono::milliseconds(0);  // nobody dies here
        group.push_back(std::make_unique<wr::stream_consumer>([](wr::stream_entry&) {}, o));
    }
    for (;;) {
        std::uint64_t acked = 0;
        for (const auto& c : group) {
            acked += c->stats().acknowledged;
        }
        if (acked >= static_cast<std::uint64_t>(s.n)) {
            break;
        }
        // Each look wakes this thread (on 2 cores it may preempt the server) and stats() is not
        // free: look rarely until the end is near, then often, so the clock stops within 0.2 ms.
        const bool near = acked * 10 >= static_cast<std::uint64_t>(s.n) * 9;
        std::this_thread::sleep_for(near ? std::chrono::microseconds(200)
                                         : std::chrono::microseconds(5000));
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    group.clear();
    return seconds;
}

// Seconds until K raw loops acknowledged every entry (connecting included).
double raw_seconds(const setup& s, const std::string& stream) {
    // Connecting is timed, as the consumers' start (connect, check the group, start the pool).
    const auto t0 = clock_type::now();
    std::vector<redisContext*> contexts;
    for (int i = 0; i < s.consumers; ++i) {
        redisContext* c = redisConnect("127.0.0.1", s.port);
        if (c == nullptr || c->err != 0) {
            std::fprintf(stderr, "raw loop: cannot connect to 127.0.0.1:%d\n", s.port);
            std::exit(1);
        }
        contexts.push_back(c);
    }
    std::vector<std::thread> loops;
    std::atomic<std::uint64_t> done{0};
    for (int i = 0; i < s.consumers; ++i) {
        loops.emplace_back([&, i] {
            // Each loop stops when the group as a whole is done (the shared count).
            (void)workerpool::bench::raw_consume(contexts[static_cast<std::size_t>(i)], stream, "g",
                                                 "raw-" + std::to_string(i), s.batch,
                                                 static_cast<std::uint64_t>(s.n), done);
        });
    }
    for (std::thread& t : loops) {
        t.join();
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    for (redisContext* c : contexts) {
        redisFree(c);
    }
    return seconds;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s PORT [N] [CONSUMERS] [BATCH] [REPEATS]\n", argv[0]);
        return 2;
    }
    setup s{std::atoi(argv[1]), argc > 2 ? std::atol(argv[2]) : 200000,
            argc > 3 ? std::atoi(argv[3]) : 1,
            argc > 4 ? static_cast<std::size_t>(std::atol(argv[4])) : 100};
    const int repeats = argc > 5 ? std::atoi(argv[5]) : 3;
    if (s.n <= 0 || s.consumers <= 0 || s.batch == 0 || repeats <= 0) {
        std::fprintf(stderr, "bench_redis: N, CONSUMERS, BATCH and REPEATS must be > 0\n");
        return 2;
    }
    std::vector<double> consumer;
    std::vector<double> raw;
    std::vector<double> ratios;
    std::vector<double> consumer_cpu;
    std::vector<double> raw_cpu;
    const std::string prefix = "workerpool-bench:" + std::to_string(::getpid()) + ":";
    for (int r = 0; r < repeats; ++r) {
        result c;
        result w;
        for (int half = 0; half < 2; ++half) {
            const bool raw_turn = (half == 0) == (r % 2 == 0);  // alternate who goes first
            const std::string stream =
                fill(s, prefix + std::to_string(r) + ":" + (raw_turn ? "raw" : "consumer"));
            if (raw_turn) {
                w = measure(s, [&] { return raw_seconds(s, stream); });
            } else {
                c = measure(s, [&] { return consumer_seconds(s, stream); });
            }
            drop(s, stream);
        }
        consumer.push_back(c.rate);
        raw.push_back(w.rate);
        ratios.push_back(c.rate / w.rate);
        consumer_cpu.push_back(c.client_us + c.server_us);
        raw_cpu.push_back(w.client_us + w.server_us);
        std::printf("round %d: %ld entries, %d consumer(s), batch %zu: stream_consumer %.0f/s "
                    "(cpu/entry %.2f us here + %.2f us server), raw hiredis loop %.0f/s (%.2f + "
                    "%.2f us), ratio %.3f\n",
                    r + 1, s.n, s.consumers, s.batch, c.rate, c.client_us, c.server_us, w.rate,
                    w.client_us, w.server_us, ratios.back());
        std::fflush(stdout);
    }
    auto range = [](const std::vector<double>& v) {
        return std::make_pair(*std::min_element(v.begin(), v.end()),
                              *std::max_element(v.begin(), v.end()));
    };
    std::printf("median: stream_consumer %.0f entries/s (min %.0f, max %.0f), raw hiredis loop "
                "%.0f entries/s (min %.0f, max %.0f); ratio per round: median %.3f (min %.3f, "
                "max %.3f); cpu per entry (here + server): stream_consumer %.2f us, raw %.2f us\n",
                median(consumer), range(consumer).first, range(consumer).second, median(raw),
                range(raw).first, range(raw).second, median(ratios), range(ratios).first,
                range(ratios).second, median(consumer_cpu), median(raw_cpu));
}
