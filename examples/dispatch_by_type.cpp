// The Go article's worker pool, done right: typed requests routed by type to handlers, a burst of
// work larger than the queue (back-pressure instead of dropped requests), retries with backoff,
// per-attempt timeouts, a graceful shutdown with a deadline, and a summary of where every request
// ended. Run: ./dispatch_by_type [requests]
#include <workerpool/workerpool.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

enum class kind { fetch, parse, store, unknown };

struct request {
    kind type;
    int id;
    std::string payload;
};

// A stand-in for real work that honours its stop token, as every handler should.
void work_for(std::chrono::microseconds d, const std::stop_token& st) {
    const auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) {
        if (st.stop_requested()) {
            throw std::runtime_error("stopped");
        }
        std::this_thread::yield();
    }
}

}  // namespace

int main(int argc, char** argv) {
    const int total = argc > 1 ? std::atoi(argv[1]) : 5000;

    std::atomic<int> fetched{0}, parsed{0}, stored{0};
    std::atomic<int> dead_errors{0}, dead_timeouts{0}, dead_other{0};

    workerpool::handler_map<request, kind> routes{[](const request& r) { return r.type; }};
    routes
        .on(kind::fetch,
            [&](request& r, const std::stop_token& st) {
                work_for(std::chrono::microseconds(50 + r.id % 200), st);
                if (r.id % 97 == 0) {
                    throw std::runtime_error("upstream returned 503");  // transient: retried
                }
                fetched.fetch_add(1, std::memory_order_relaxed);
            })
        .on(kind::parse,
            [&](request& r, const std::stop_token& st) {
                // Every 500th document is pathological and blows its 20 ms budget every time.
                work_for(r.id % 500 == 1 ? 40ms : 30us, st);
                parsed.fetch_add(1, std::memory_order_relaxed);
            })
        .on(kind::store, [&](request& r) {
            if (r.payload.empty()) {
                throw workerpool::permanent_error("empty payload");  // permanent: not retried
            }
            stored.fetch_add(1, std::memory_order_relaxed);
        });

    workerpool::options<request> opts;
    opts.capacity = 256;
    opts.min_workers = 2;
    opts.max_workers = 8;
    opts.scale_up_depth = 32;
    opts.default_timeout = 20ms;
    opts.retry.max_attempts = 3;
    opts.retry.initial_backoff = 1ms;
    opts.on_failure = [&](workerpool::failure<request>&& f) {
        switch (f.reason) {
        case workerpool::failure_reason::error:
            dead_errors.fetch_add(1, std::memory_order_relaxed);
            break;
        case workerpool::failure_reason::timed_out:
            dead_timeouts.fetch_add(1, std::memory_order_relaxed);
            break;
        default:
            dead_other.fetch_add(1, std::memory_order_relaxed);
        }
    };

    workerpool::dispatcher<request> pool{std::move(routes), opts};

    const auto start = std::chrono::steady_clock::now();
    int accepted = 0;
    for (int i = 0; i < total; ++i) {
        const auto type = static_cast<kind>(i % 4 == 3 ? (i % 400 == 3 ? 3 : 2) : i % 3);
        request r{type, i, i % 250 == 2 ? std::string() : "doc-" + std::to_string(i)};
        // submit() blocks while the queue is full: the burst is paced, never dropped.
        if (pool.submit(std::move(r)) == workerpool::submit_status::accepted) {
            ++accepted;
        }
    }
    const auto submitted_in = std::chrono::steady_clock::now() - start;

    const workerpool::shutdown_report<request> report = pool.shutdown(2s);
    const workerpool::stats_snapshot s = pool.stats();
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const auto ms = [](auto d) {
        return static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
    };

    std::printf("workerpool: %d requests routed by type through a pool of %zu..%zu workers\n",
                total, opts.min_workers, opts.max_workers);
    std::printf("  submitted   %llu in %lld ms (queue capacity %zu, back-pressure, none dropped)\n",
                static_cast<unsigned long long>(s.submitted), ms(submitted_in), s.capacity);
    std::printf("  completed   %llu  (fetch %d, parse %d, store %d; %llu finished late)\n",
                static_cast<unsigned long long>(s.completed), fetched.load(), parsed.load(),
                stored.load(), static_cast<unsigned long long>(s.late));
    std::printf("  retried     %llu attempts; %llu attempts timed out\n",
                static_cast<unsigned long long>(s.retried),
                static_cast<unsigned long long>(s.timed_out));
    std::printf("  failed      %llu  (errors %d, timeouts %d, other %d)\n",
                static_cast<unsigned long long>(s.failed), dead_errors.load(), dead_timeouts.load(),
                dead_other.load());
    std::printf("  handed back %zu unprocessed by shutdown (%s)\n", report.unprocessed.size(),
                report.drained ? "drained within the grace" : "grace ran out");
    std::printf("  workers     peak %zu, %llu scale-ups, %llu scale-downs\n", s.peak_workers,
                static_cast<unsigned long long>(s.scale_ups),
                static_cast<unsigned long long>(s.scale_downs));
    std::printf("  elapsed     %lld ms\n", ms(elapsed));

    const auto ended = s.completed + s.failed + report.unprocessed.size();
    const bool ok = ended == static_cast<unsigned long long>(accepted);
    std::printf("  accounting  accepted %d == completed + failed + unprocessed %llu: %s\n",
                accepted, static_cast<unsigned long long>(ended), ok ? "yes" : "NO");
    return ok ? 0 : 1;
}
