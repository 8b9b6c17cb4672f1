// End-to-end throughput of the Redis Streams consumer on loopback: append N entries to a fresh
// stream, then start K consumers (each its own connection, reader thread and pool, in this one
// process) and time until every entry is acknowledged. The handler does nothing, so this measures
// the integration's overhead: reads, submits, acknowledgements.
//
// usage: bench_redis PORT [N=200000] [CONSUMERS=1] [BATCH=64] [REPEATS=3]
// Prints one line per run and the median. scripts/redis-throughput.sh starts a server for it.

#include <workerpool/redis/stream_consumer.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace wr = workerpool::redis;
using clock_type = std::chrono::steady_clock;

namespace {

void fill(wr::detail::connection& c, const std::string& stream, long n) {
    constexpr long chunk = 10000;
    for (long done = 0; done < n; done += chunk) {
        const long m = std::min(chunk, n - done);
        for (long i = 0; i < m; ++i) {
            (void)c.append({"XADD", stream, "*", "n", std::to_string(done + i), "payload",
                            "0123456789abcdef0123456789abcdef"});
        }
        for (long i = 0; i < m; ++i) {
            if (c.reply() == nullptr) {
                std::fprintf(stderr, "XADD failed: %s\n", c.error().c_str());
                std::exit(1);
            }
        }
    }
}

double run_once(int port, long n, int consumers, std::size_t batch, int round) {
    const std::string stream =
        "workerpool-bench:" + std::to_string(::getpid()) + ":" + std::to_string(round);
    wr::detail::connection admin("127.0.0.1", port, std::chrono::seconds(2),
                                 std::chrono::seconds(30));
    if (!admin.ok()) {
        std::fprintf(stderr, "cannot connect to 127.0.0.1:%d: %s\n", port, admin.error().c_str());
        std::exit(1);
    }
    (void)admin.command({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    fill(admin, stream, n);

    const auto t0 = clock_type::now();
    std::vector<std::unique_ptr<wr::stream_consumer>> group;
    for (int i = 0; i < consumers; ++i) {
        wr::consumer_options o;
        o.port = port;
        o.stream = stream;
        o.group = "g";
        o.consumer = "bench-" + std::to_string(i);
        o.batch = batch;
        o.claim_idle = std::chrono::milliseconds(0);  // nobody dies here
        group.push_back(std::make_unique<wr::stream_consumer>([](wr::stream_entry&) {}, o));
    }
    for (;;) {
        std::uint64_t acked = 0;
        for (const auto& c : group) {
            acked += c->stats().acknowledged;
        }
        if (acked >= static_cast<std::uint64_t>(n)) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    group.clear();
    (void)admin.command({"DEL", stream});
    return static_cast<double>(n) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s PORT [N] [CONSUMERS] [BATCH] [REPEATS]\n", argv[0]);
        return 2;
    }
    const int port = std::atoi(argv[1]);
    const long n = argc > 2 ? std::atol(argv[2]) : 200000;
    const int consumers = argc > 3 ? std::atoi(argv[3]) : 1;
    const std::size_t batch = argc > 4 ? static_cast<std::size_t>(std::atol(argv[4])) : 64;
    const int repeats = argc > 5 ? std::atoi(argv[5]) : 3;
    std::vector<double> rates;
    for (int r = 0; r < repeats; ++r) {
        rates.push_back(run_once(port, n, consumers, batch, r));
        std::printf("run %d: %ld entries, %d consumer(s), batch %zu: %.0f entries/s\n", r + 1, n,
                    consumers, batch, rates.back());
    }
    std::sort(rates.begin(), rates.end());
    std::printf("median: %.0f entries/s (min %.0f, max %.0f)\n", rates[rates.size() / 2],
                rates.front(), rates.back());
}
