// Whole-pool benchmarks: our dispatcher against the pools a user would pick instead, in one
// binary, through one adapter interface (bench/peers/*.hpp).
//
// Names are BM_<workload>_<shape>/<pool>, for example BM_noop_1p2w/asio (one producer, two
// workers). The `ceiling` (peers/ceiling_pool.hpp) runs only the throughput workloads. Every
// throughput benchmark submits WORKERPOOL_BENCH_REQUESTS requests per iteration (default 200'000)
// and times from the first submit to the moment the producer sees that the last handler has
// returned, so items_per_second is requests per second through the whole pool. Every pool must run
// every request exactly once; the benchmark aborts otherwise.

#include "peers/ceiling_pool.hpp"
#include "peers/mutex_pool.hpp"
#include "peers/workerpool_pool.hpp"
#include "support.hpp"

#ifdef WORKERPOOL_BENCH_HAVE_ASIO
#include "peers/asio_pool.hpp"
#endif
#ifdef WORKERPOOL_BENCH_HAVE_TBB
#include "peers/tbb_pool.hpp"
#endif
#ifdef WORKERPOOL_BENCH_HAVE_MOODYCAMEL
#include "peers/moodycamel_pool.hpp"
#endif

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace wb = workerpool_bench;

namespace {

struct shape {
    unsigned producers;
    unsigned workers;
    std::size_t capacity;  // 0: the pool's natural mode
};

/// Runs `body`, one producer's submission loop, through `pool.produce` where the pool has one
/// (oneTBB's task_group peer enters its arena there), else directly.
template <class Pool, class Body>
void as_producer(Pool& pool, Body&& body) {
    if constexpr (requires { pool.produce(body); }) {
        pool.produce(std::forward<Body>(body));
    } else {
        body();
    }
}

/// Throughput: N requests per iteration from `producers` threads into a pool of `workers`.
/// Counters: items_per_second; cpu_ns_per_req (process CPU, all threads, per request: shows
/// spinning); for the spin workload, efficiency = (N x unit cost / workers) / elapsed.
template <class Pool>
void bm_throughput(benchmark::State& state, shape s, wb::work_kind kind) {
    const std::uint64_t n = wb::requests_per_iteration();
    wb::bench_context ctx(kind);
    Pool pool(wb::pool_config{s.workers, s.capacity, s.producers}, wb::bench_handler{&ctx});
    const std::uint64_t per_producer = n / s.producers;
    const std::uint64_t total_per_round = per_producer * s.producers;
    wb::producer_team team(s.producers, [&pool, per_producer](unsigned) {
        as_producer(pool, [&pool, per_producer] {
            for (std::uint64_t i = 0; i < per_producer; ++i) {
                pool.submit(wb::job{i});
            }
        });
    });

    std::uint64_t target = 0;
    double elapsed_total = 0;
    const std::uint64_t cpu0 = wb::process_cpu_ns();
    for (auto _ : state) {
        target += total_per_round;
        const auto t0 = wb::clock_type::now();
        team.run();
        ctx.done.wait_for(target);
        const auto t1 = wb::clock_type::now();
        const double seconds = std::chrono::duration<double>(t1 - t0).count();
        elapsed_total += seconds;
        state.SetIterationTime(seconds);
    }
    const std::uint64_t cpu1 = wb::process_cpu_ns();
    if (ctx.done.was_sum() != target) {
        wb::die(std::string(Pool::name) + ": completion count mismatch after the run");
    }
    const auto items = static_cast<double>(target);
    state.SetItemsProcessed(static_cast<std::int64_t>(target));
    state.counters["cpu_ns_per_req"] = static_cast<double>(cpu1 - cpu0) / items;
    if (kind == wb::work_kind::spin) {
        const double ideal = items * wb::work_unit::one_microsecond().ns * 1e-9 / s.workers;
        state.counters["efficiency"] = ideal / elapsed_total;
        state.counters["unit_ns"] = wb::work_unit::one_microsecond().ns;
    }
}

double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) {
        return 0;
    }
    const auto last = static_cast<double>(sorted.size() - 1);
    const auto index = static_cast<std::size_t>(p * last + 0.5);
    return sorted[std::min(index, sorted.size() - 1)];
}

/// Sets the p50_us / p99_us / max_us counters from latency samples sorted in ascending order.
void report_latency(benchmark::State& state, const std::vector<double>& sorted_us) {
    state.counters["p50_us"] = percentile(sorted_us, 0.50);
    state.counters["p99_us"] = percentile(sorted_us, 0.99);
    state.counters["max_us"] = sorted_us.empty() ? 0.0 : sorted_us.back();
}

/// Idle wake-up latency: one request into an idle pool, time from just before submit to the
/// start of its handler; the pool is left idle for 200 µs between samples, so workers that spin
/// before sleeping have gone to sleep. Reports p50/p99/max in µs; the iteration time is the
/// latency itself.
template <class Pool>
void bm_wakeup(benchmark::State& state, unsigned workers) {
    wb::bench_context ctx(wb::work_kind::wake_probe);
    Pool pool(wb::pool_config{workers, 0}, wb::bench_handler{&ctx});
    std::vector<double> samples_us;
    samples_us.reserve(static_cast<std::size_t>(state.max_iterations));
    std::uint64_t seq = 0;
    for (auto _ : state) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // outside the manual time
        const std::uint64_t t0 = wb::now_ns();
        pool.submit(wb::job{t0});
        ++seq;
        for (;;) {
            // [P2] sees the latency stored before [P1]
            const std::uint64_t seen = ctx.probe_seq.load(std::memory_order_acquire);
            if (seen == seq) {
                break;
            }
            ctx.probe_seq.wait(seen, std::memory_order_acquire);  // [P2]
        }
        const auto latency_ns =
            static_cast<double>(ctx.probe_latency_ns.load(std::memory_order_relaxed));
        samples_us.push_back(latency_ns / 1000.0);
        state.SetIterationTime(latency_ns * 1e-9);
    }
    ctx.done.wait_for(seq);
    std::sort(samples_us.begin(), samples_us.end());
    report_latency(state, samples_us);
}

/// Queue wait under load: bursts of 64 requests of ~1 µs work each into a pool of `workers`,
/// every 200 µs or so (about an eighth of two workers' time is work); time from just before each
/// submit to the start of its handler. The first requests of a burst show the wake-up, the last
/// ones how fast the workers get through the queue. Reports p50/p99/max in µs; the iteration time
/// is the burst's, from its first submit to its last completion.
template <class Pool>
void bm_burst_wait(benchmark::State& state, unsigned workers) {
    constexpr std::uint64_t burst = 64;
    const auto bursts = static_cast<std::size_t>(state.max_iterations);
    wb::bench_context ctx(wb::work_kind::timed_spin, bursts * burst);
    Pool pool(wb::pool_config{workers, 0}, wb::bench_handler{&ctx});
    std::uint64_t submitted = 0;
    for (auto _ : state) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // outside the manual time
        const auto t0 = wb::clock_type::now();
        for (std::uint64_t i = 0; i < burst; ++i) {
            pool.submit(wb::job{wb::now_ns()});
        }
        submitted += burst;
        ctx.done.wait_for(submitted);
        state.SetIterationTime(std::chrono::duration<double>(wb::clock_type::now() - t0).count());
    }
    report_latency(state, ctx.waits.sorted_us());
}

/// Idle CPU: a pool that has run a small burst and is then left alone for
/// WORKERPOOL_BENCH_IDLE_MS (default 1000 ms). Reports the process CPU it burnt, as a percentage
/// of one core (idle_cpu_pct) and in ms per idle second.
template <class Pool>
void bm_idle_cpu(benchmark::State& state, unsigned workers) {
    wb::bench_context ctx(wb::work_kind::noop);
    Pool pool(wb::pool_config{workers, 0}, wb::bench_handler{&ctx});
    constexpr std::uint64_t warmup = 1000;
    for (std::uint64_t i = 0; i < warmup; ++i) {
        pool.submit(wb::job{i});
    }
    ctx.done.wait_for(warmup);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let spinning workers settle
    double cpu_ms = 0;
    double wall_ms = 0;
    for (auto _ : state) {
        const std::uint64_t cpu0 = wb::process_cpu_ns();
        const auto t0 = wb::clock_type::now();
        std::this_thread::sleep_for(std::chrono::milliseconds(wb::idle_window_ms()));
        const auto t1 = wb::clock_type::now();
        const std::uint64_t cpu1 = wb::process_cpu_ns();
        const double wall = std::chrono::duration<double>(t1 - t0).count();
        state.SetIterationTime(wall);
        cpu_ms += static_cast<double>(cpu1 - cpu0) / 1e6;
        wall_ms += wall * 1e3;
    }
    state.counters["idle_cpu_pct"] = 100.0 * cpu_ms / wall_ms;
}

/// Whether `Pool` runs only the throughput benchmarks (the ceiling: its consumers never sleep).
template <class Pool>
constexpr bool throughput_only = requires {
    Pool::throughput_only;
};

template <template <class> class PoolTemplate>
void register_pool() {
    using pool = PoolTemplate<wb::bench_handler>;
    const std::string tag = std::string("/") + pool::name;
    const auto throughput = [&tag](const char* workload, shape s, wb::work_kind kind) {
        benchmark::RegisterBenchmark(
            (std::string("BM_") + workload + tag).c_str(),
            [s, kind](benchmark::State& st) { bm_throughput<pool>(st, s, kind); })
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond)
            ->MeasureProcessCPUTime();
    };
    throughput("noop_1p1w", shape{1, 1, 0}, wb::work_kind::noop);
    throughput("noop_1p2w", shape{1, 2, 0}, wb::work_kind::noop);
    throughput("noop_2p2w", shape{2, 2, 0}, wb::work_kind::noop);
    throughput("work1us_1p2w", shape{1, 2, 0}, wb::work_kind::spin);
    throughput("full64_noop_1p2w", shape{1, 2, 64}, wb::work_kind::noop);
    throughput("full64_work1us_1p2w", shape{1, 2, 64}, wb::work_kind::spin);
    if (wb::env_knob("WORKERPOOL_BENCH_MANYCORE", 0) != 0) {
        // For machines with many cores: n producers feeding n workers, one producer feeding 15
        // workers, and twice as many threads as a 16-core machine has.
        for (const unsigned n : {1U, 2U, 4U, 8U, 16U}) {
            const std::string name =
                "many_noop_" + std::to_string(n) + "p" + std::to_string(n) + "w";
            throughput(name.c_str(), shape{n, n, 0}, wb::work_kind::noop);
        }
        throughput("many_noop_1p15w", shape{1, 15, 0}, wb::work_kind::noop);
        throughput("many_noop_32p32w", shape{32, 32, 0}, wb::work_kind::noop);
        throughput("many_work1us_1p15w", shape{1, 15, 0}, wb::work_kind::spin);
    }

    if constexpr (throughput_only<pool>) {
        return;
    }
    benchmark::RegisterBenchmark((std::string("BM_wakeup_1p2w") + tag).c_str(),
                                 [](benchmark::State& st) { bm_wakeup<pool>(st, 2); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(static_cast<benchmark::IterationCount>(wb::wakeup_samples()));
    benchmark::RegisterBenchmark((std::string("BM_burst_wait_1p2w") + tag).c_str(),
                                 [](benchmark::State& st) { bm_burst_wait<pool>(st, 2); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(200);
    benchmark::RegisterBenchmark((std::string("BM_idle_cpu_2w") + tag).c_str(),
                                 [](benchmark::State& st) { bm_idle_cpu<pool>(st, 2); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
}

const bool registered = [] {
    // In the order of bench/pools.txt.
    register_pool<wb::ceiling_pool>();
    register_pool<wb::workerpool_pool>();
    register_pool<wb::workerpool_by_value_pool>();
    register_pool<wb::workerpool_no_timeout_pool>();
    register_pool<wb::workerpool_fifo_pool>();
    register_pool<wb::workerpool_sharded_pool>();
    register_pool<wb::mutex_pool>();
#ifdef WORKERPOOL_BENCH_HAVE_ASIO
    register_pool<wb::asio_pool>();
#endif
#ifdef WORKERPOOL_BENCH_HAVE_MOODYCAMEL
    register_pool<wb::moodycamel_pool>();
    register_pool<wb::moodycamel_typed_pool>();
#endif
#ifdef WORKERPOOL_BENCH_HAVE_TBB
    // Last: oneTBB's global worker threads outlive its pools.
    register_pool<wb::tbb_pool>();
    register_pool<wb::tbb_task_group_pool>();
#endif
    return true;
}();

}  // namespace
