#pragma once

// Shared pieces of the pool benchmarks: the request type, the handler every pool runs, the
// completion counters, the calibrated unit of work, the producer team and the knobs read from
// the environment. Not part of the library.

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace workerpool_bench {

/// Prints `what` and aborts: a benchmark that lost or duplicated a request must not print a number.
[[noreturn]] inline void die(const std::string& what) {
    std::fprintf(stderr, "workerpool bench: FATAL: %s\n", what.c_str());
    std::fflush(stderr);
    std::abort();
}

/// Reads a positive integer knob from the environment, or returns `fallback`.
inline std::uint64_t env_knob(const char* name, std::uint64_t fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') {
        return fallback;
    }
    char* end = nullptr;
    const unsigned long long value = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || value == 0) {
        die(std::string("environment variable ") + name + " must be a positive integer");
    }
    return value;
}

/// Requests per benchmark iteration (WORKERPOOL_BENCH_REQUESTS, default 200'000).
inline std::uint64_t requests_per_iteration() {
    static const std::uint64_t n = env_knob("WORKERPOOL_BENCH_REQUESTS", 200'000);
    return n;
}

/// Wake-up samples per repetition (WORKERPOOL_BENCH_WAKEUP_SAMPLES, default 300).
inline std::uint64_t wakeup_samples() {
    static const std::uint64_t n = env_knob("WORKERPOOL_BENCH_WAKEUP_SAMPLES", 300);
    return n;
}

/// How long an idle pool is watched, in milliseconds (WORKERPOOL_BENCH_IDLE_MS, default 1000).
inline std::uint64_t idle_window_ms() {
    static const std::uint64_t n = env_knob("WORKERPOOL_BENCH_IDLE_MS", 1000);
    return n;
}

using clock_type = std::chrono::steady_clock;

inline std::uint64_t now_ns() noexcept {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
            .count());
}

/// CPU time (user + system) consumed so far by every thread of this process, in nanoseconds.
inline std::uint64_t process_cpu_ns() noexcept {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const auto to_ns = [](const timeval& tv) {
        return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000'000U +
               static_cast<std::uint64_t>(tv.tv_usec) * 1'000U;
    };
    return to_ns(ru.ru_utime) + to_ns(ru.ru_stime);
}

/// The request every pool carries: one word, trivially copyable, nothrow movable.
struct job {
    std::uint64_t value = 0;  // the submit time in ns for the wake-up benchmark; unused otherwise
};

// Not std::hardware_destructive_interference_size: GCC warns that it is ABI-unstable.
inline constexpr std::size_t cache_line = 64;

/// Completion counters, one cache line per handler thread, so that counting a completion never
/// contends: the handler bumps its own thread's line and the producer sums the lines.
class completion_counters {
public:
    static constexpr std::size_t slots = 64;

    /// Counts one completed request on the calling thread's line.
    void bump() noexcept {
        // relaxed: a count only; the producer's acquire sum below needs no other data from here,
        // and the handler has no other side effect worth publishing.
        lines_[my_slot()].value.fetch_add(1, std::memory_order_relaxed);
    }

    /// Sums all lines. Racy by nature: a lower bound of the completions at the time it returns.
    [[nodiscard]] std::uint64_t was_sum() const noexcept {
        // relaxed: a hint; lines never handed out hold 0 anyway.
        std::size_t used = next_slot().load(std::memory_order_relaxed);
        if (used > slots) {
            used = slots;
        }
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < used; ++i) {
            sum += lines_[i].value.load(std::memory_order_relaxed);  // statistics only
        }
        return sum;
    }

    /// Waits (polling every ~20 µs, so the waiting producer does not steal a core from the
    /// workers) until `target` requests have completed. Aborts after 60 s or on an overshoot.
    void wait_for(std::uint64_t target) const {
        const auto give_up = clock_type::now() + std::chrono::seconds(60);
        for (;;) {
            const std::uint64_t sum = was_sum();
            if (sum == target) {
                return;
            }
            if (sum > target) {
                die("a pool ran more requests than were submitted (" + std::to_string(sum) + " > " +
                    std::to_string(target) + ")");
            }
            if (clock_type::now() > give_up) {
                die("a pool did not finish its requests within 60 s (" + std::to_string(sum) +
                    " of " + std::to_string(target) + ")");
            }
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    }

private:
    struct alignas(cache_line) line {
        std::atomic<std::uint64_t> value{0};
    };
    static_assert(sizeof(line) == cache_line, "two handler threads must not share a counter line");

    static std::atomic<std::size_t>& next_slot() noexcept {
        static std::atomic<std::size_t> next{0};
        return next;
    }
    static std::size_t my_slot() noexcept {
        // Threads that outlive a pool (oneTBB's workers) keep their slot; fetch_add above makes
        // a shared slot merely slower, never wrong.
        static thread_local const std::size_t slot =
            next_slot().fetch_add(1, std::memory_order_relaxed) % slots;  // a ticket only
        return slot;
    }

    line lines_[slots];
};

/// A fixed amount of CPU work: a dependent multiply-add chain the compiler cannot remove.
inline std::uint64_t spin_work(std::uint64_t iterations) noexcept {
    std::uint64_t x = iterations;
    for (std::uint64_t i = 0; i < iterations; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        asm volatile("" : "+r"(x));
    }
    return x;
}

/// The calibrated unit of work: how many `spin_work` iterations take about 1 µs on this machine,
/// and how long that unit really takes (best of several tries, so a noisy neighbour inflates
/// neither).
struct work_unit {
    std::uint64_t iterations = 0;
    double ns = 0;

    static const work_unit& one_microsecond() {
        static const work_unit unit = calibrate(1000.0);
        return unit;
    }

private:
    static double best_ns(std::uint64_t iterations) {
        double best = 1e300;
        for (int attempt = 0; attempt < 7; ++attempt) {
            const std::uint64_t t0 = now_ns();
            volatile std::uint64_t sink = spin_work(iterations);
            static_cast<void>(sink);
            const std::uint64_t t1 = now_ns();
            const auto elapsed = static_cast<double>(t1 - t0);
            if (elapsed < best) {
                best = elapsed;
            }
        }
        return best;
    }
    static work_unit calibrate(double target_ns) {
        constexpr std::uint64_t probe = 2'000'000;
        const double per_iteration = best_ns(probe) / static_cast<double>(probe);
        work_unit unit;
        unit.iterations = static_cast<std::uint64_t>(target_ns / per_iteration);
        if (unit.iterations == 0) {
            unit.iterations = 1;
        }
        // Re-measure the unit itself, 1000 in a row, so the reported efficiency uses its real cost.
        unit.ns = best_ns(unit.iterations * 1000) / 1000.0;
        return unit;
    }
};

/// What a handler does with a request.
enum class work_kind {
    noop,        // count it
    spin,        // burn one calibrated ~1 µs unit, then count it
    wake_probe,  // record submit→start latency and wake the producer
    timed_spin   // record submit→start latency (the job carries the submit time), then as spin
};

/// Queue-wait samples (submit to handler start, ns) from every handler thread: a buffer sized
/// before the run, filled through one atomic index, so recording never allocates.
class wait_samples {
public:
    explicit wait_samples(std::size_t capacity) : values_(capacity) {}

    void record(std::uint64_t ns) noexcept {
        // relaxed: a ticket into the buffer; the producer reads the values only after
        // completion_counters::wait_for saw every handler's bump, which happens after this.
        const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
        if (i < values_.size()) {
            values_[i] = ns;
        }
    }

    /// The samples recorded so far, in µs, sorted. Call only when no handler is running.
    [[nodiscard]] std::vector<double> sorted_us() const {
        // relaxed: every recording handler finished before the caller's wait_for returned
        std::size_t n = next_.load(std::memory_order_relaxed);
        if (n > values_.size()) {
            n = values_.size();
        }
        std::vector<double> out;
        out.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            out.push_back(static_cast<double>(values_[i]) / 1000.0);
        }
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    std::vector<std::uint64_t> values_;
    std::atomic<std::size_t> next_{0};
};

/// The state a benchmark shares with the handlers of its pool.
struct bench_context {
    explicit bench_context(work_kind k, std::size_t wait_capacity = 0)
        : kind(k), waits(wait_capacity) {
        if (kind == work_kind::spin || kind == work_kind::timed_spin) {
            spin_iterations = work_unit::one_microsecond().iterations;
        }
    }

    work_kind kind;
    std::uint64_t spin_iterations = 0;
    completion_counters done;
    // Wake-up probe: the handler stores the latency, then bumps the sequence.
    alignas(cache_line) std::atomic<std::uint64_t> probe_latency_ns{0};
    std::atomic<std::uint64_t> probe_seq{0};  // [P1]/[P2]
    std::atomic<std::uint64_t> sink{0};       // keeps spin_work's result alive; relaxed, unused
    wait_samples waits;                       // timed_spin only
};

/// The handler every pool runs: one pointer, so every pool stores and copies it for free.
struct bench_handler {
    bench_context* ctx;

    void operator()(job& j) const noexcept {
        switch (ctx->kind) {
        case work_kind::noop:
            break;
        case work_kind::timed_spin:
            ctx->waits.record(now_ns() - j.value);
            [[fallthrough]];
        case work_kind::spin: {
            const std::uint64_t x = spin_work(ctx->spin_iterations);
            if (x == 0) {  // practically never; stops the optimiser dropping the work
                ctx->sink.store(x, std::memory_order_relaxed);
            }
            break;
        }
        case work_kind::wake_probe: {
            const std::uint64_t started = now_ns();
            ctx->probe_latency_ns.store(started - j.value, std::memory_order_relaxed);
            // [P1] publishes probe_latency_ns; pairs with [P2] in the producer.
            ctx->probe_seq.fetch_add(1, std::memory_order_release);
            ctx->probe_seq.notify_one();
            break;
        }
        }
        ctx->done.bump();
    }
};

/// Sizing handed to every pool adapter.
struct pool_config {
    unsigned workers = 2;
    // 0: the pool's natural mode (bounded pools use natural_bounded_capacity(), unbounded ones stay
    // unbounded). Otherwise every pool is bounded to exactly this many queued requests (unbounded
    // pools get a counting semaphore in front, which is how a user would add back-pressure).
    std::size_t capacity = 0;
    // Threads that will submit at once. Only `workerpool_sharded` uses it (one ring each, up to
    // the workers), as a user who knows the shape of the load would set `queue_shards`.
    unsigned producers = 1;
};

/// The capacity of the bounded pools (`mutex_cv`, `workerpool*`) in their natural mode
/// (WORKERPOOL_BENCH_CAPACITY, default 1024). Raising it above the requests per iteration shows
/// what back-pressure costs them, next to the unbounded peers.
inline std::size_t natural_bounded_capacity() {
    static const auto n = static_cast<std::size_t>(env_knob("WORKERPOOL_BENCH_CAPACITY", 1024));
    return n;
}

/// `producers - 1` helper threads that, together with the calling thread, run one round of
/// submissions each time `run()` is called. Helpers sleep (futex) between rounds.
class producer_team {
public:
    using body_type = std::function<void(unsigned producer)>;

    producer_team(unsigned producers, body_type body) : body_(std::move(body)) {
        for (unsigned i = 1; i < producers; ++i) {
            helpers_.emplace_back([this, i](std::stop_token stop) { helper_loop(stop, i); });
        }
    }
    producer_team(const producer_team&) = delete;
    producer_team& operator=(const producer_team&) = delete;

    ~producer_team() {
        for (auto& t : helpers_) {
            t.request_stop();
        }
        round_.fetch_add(1, std::memory_order_release);  // wakes helpers so they see the stop
        round_.notify_all();
    }

    /// Runs `body(0)` here and `body(i)` on helper i; returns when every producer is done.
    void run() {
        pending_.store(helpers_.size(), std::memory_order_relaxed);  // published by [T1]
        round_.fetch_add(1, std::memory_order_release);  // [T1] publishes pending_; pairs with [T2]
        round_.notify_all();
        body_(0);
        for (;;) {
            // [T4] pairs with [T3]: the helpers' submissions happened before.
            const std::size_t left = pending_.load(std::memory_order_acquire);
            if (left == 0) {
                return;
            }
            pending_.wait(left, std::memory_order_acquire);  // [T4]
        }
    }

private:
    void helper_loop(const std::stop_token& stop, unsigned index) {
        std::uint64_t seen = 0;
        for (;;) {
            round_.wait(seen, std::memory_order_acquire);   // [T2] sees pending_ stored before [T1]
            seen = round_.load(std::memory_order_acquire);  // [T2]
            if (stop.stop_requested()) {
                return;
            }
            body_(index);
            // [T3] publishes this producer's submissions as finished; pairs with [T4]
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                pending_.notify_one();
            }
        }
    }

    body_type body_;
    std::atomic<std::uint64_t> round_{0};
    std::atomic<std::size_t> pending_{0};
    std::vector<std::jthread> helpers_;  // last: joined before the atomics above are destroyed
};

}  // namespace workerpool_bench
