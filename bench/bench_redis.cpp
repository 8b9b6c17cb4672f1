// End-to-end throughput of the Redis Streams consumer on loopback, side by side with its ceiling.
// Each round appends N entries to a fresh stream and times until every one is acknowledged, twice:
// once by K `stream_consumer`s (each its own connection, reader thread and pool, in this one
// process, a handler that does nothing), once by K raw hiredis loops (redis_raw_loop.hpp:
// XREADGROUP COUNT <batch>, XACK pipelined with the next read, no pool). Rounds alternate which
// goes first, so both see the same machine; the ratio consumer / raw is the integration's
// overhead (reads, parsing, submits, acknowledgements), not a network's.
//
// usage: bench_redis PORT [N=200000] [CONSUMERS=1] [BATCH=100] [REPEATS=3]
// Prints one line per run, the medians and the ratio. scripts/redis-throughput.sh starts a server.

#include <workerpool/redis/stream_consumer.hpp>
#include <workerpool/redis/stream_producer.hpp>

#include "redis_raw_loop.hpp"

#include <unistd.h>

#include <algorithm>
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

double consumer_rate(const setup& s, const std::string& stream) {
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
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // stats() is not free
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    group.clear();
    return static_cast<double>(s.n) / seconds;
}

double raw_rate(const setup& s, const std::string& stream) {
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
    for (int i = 0; i < s.consumers; ++i) {
        loops.emplace_back([&, i] {
            // Each loop stops when the group as a whole is done: it asks for the total it still
            // needs, so the last batches are split however the server hands them out.
            (void)workerpool::bench::raw_consume(contexts[static_cast<std::size_t>(i)], stream, "g",
                                                 "raw-" + std::to_string(i), s.batch,
                                                 static_cast<std::uint64_t>(s.n));
        });
    }
    for (std::thread& t : loops) {
        t.join();
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    for (redisContext* c : contexts) {
        redisFree(c);
    }
    return static_cast<double>(s.n) / seconds;
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
    const std::string prefix = "workerpool-bench:" + std::to_string(::getpid()) + ":";
    for (int r = 0; r < repeats; ++r) {
        double c_rate = 0;
        double r_rate = 0;
        for (int half = 0; half < 2; ++half) {
            const bool raw_turn = (half == 0) == (r % 2 == 0);  // alternate who goes first
            const std::string stream =
                fill(s, prefix + std::to_string(r) + ":" + (raw_turn ? "raw" : "consumer"));
            (raw_turn ? r_rate : c_rate) =
                raw_turn ? raw_rate(s, stream) : consumer_rate(s, stream);
            drop(s, stream);
        }
        consumer.push_back(c_rate);
        raw.push_back(r_rate);
        ratios.push_back(c_rate / r_rate);
        std::printf("round %d: %ld entries, %d consumer(s), batch %zu: stream_consumer %.0f/s, "
                    "raw hiredis loop %.0f/s, ratio %.3f\n",
                    r + 1, s.n, s.consumers, s.batch, c_rate, r_rate, ratios.back());
        std::fflush(stdout);
    }
    std::printf("median: stream_consumer %.0f entries/s (min %.0f, max %.0f), raw hiredis loop "
                "%.0f entries/s (min %.0f, max %.0f); ratio per round: median %.3f (min %.3f, "
                "max %.3f)\n",
                median(consumer), *std::min_element(consumer.begin(), consumer.end()),
                *std::max_element(consumer.begin(), consumer.end()), median(raw),
                *std::min_element(raw.begin(), raw.end()),
                *std::max_element(raw.begin(), raw.end()), median(ratios),
                *std::min_element(ratios.begin(), ratios.end()),
                *std::max_element(ratios.begin(), ratios.end()));
}
