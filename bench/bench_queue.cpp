// The bounded queue alone, against moodycamel::ConcurrentQueue as the reference lock-free queue.
//
//   BM_queue_spsc/<queue>   two threads: thread 0 pushes, thread 1 pops (both spin on full/empty).
//   BM_queue_mpmc/<queue>   every thread pushes one element, then pops one (rigtorp's pattern).
//                           With WORKERPOOL_BENCH_MANYCORE=1 also at 4, 8 and 16 threads.
//
// `sharded_queue` is the dispatcher's queue with options.queue_shards = 8: each thread pushes to
// its home ring and pops starting from it.
//
// items_per_second counts elements that went through the queue (pushed and popped). Every run
// ends with an empty queue and the consumer checks that it saw the producer's sequence in order
// (SPSC), or that pushes and pops balance (MPMC); a mismatch aborts.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/sharded_queue.hpp>

#include "support.hpp"

#ifdef WORKERPOOL_BENCH_HAVE_MOODYCAMEL
#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#else
#include <moodycamel/concurrentqueue.h>
#endif
#endif

#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>

namespace wb = workerpool_bench;

namespace {

constexpr std::size_t queue_capacity = 1024;

using workerpool::detail::cpu_relax;  // not API, but the same pause the pool spins with

/// Our queue behind the two calls the benchmarks need.
struct ours {
    static constexpr const char* name = "bounded_queue";
    workerpool::bounded_queue<std::uint64_t> q{queue_capacity};
    bool try_push(std::uint64_t v) noexcept {
        return q.try_push(std::move(v)) == workerpool::submit_status::accepted;
    }
    bool try_pop(std::uint64_t& v) noexcept { return q.try_pop(v); }
    std::size_t approx_size() const noexcept { return q.approx_size(); }
};

/// The same capacity split into 8 rings, as the dispatcher uses it with queue_shards = 8.
struct ours_sharded {
    static constexpr const char* name = "sharded_queue";
    workerpool::detail::sharded_queue<std::uint64_t> q{queue_capacity, 8};
    bool try_push(std::uint64_t v) noexcept {
        return q.try_emplace(v) == workerpool::submit_status::accepted;
    }
    bool try_pop(std::uint64_t& v) noexcept {
        return q.consume(q.home_shard(), [&v](std::uint64_t&& x) noexcept { v = x; });
    }
    std::size_t approx_size() const noexcept { return q.approx_size(); }
};

#ifdef WORKERPOOL_BENCH_HAVE_MOODYCAMEL
/// moodycamel's queue, preallocated for the same capacity, used the way its README suggests:
/// enqueue (which may allocate a block when the preallocated ones are in use; in practice it
/// recycles them) and try_dequeue, without producer/consumer tokens, as a pool would call it.
/// Not bounded. Its try_enqueue (the non-allocating, bounded call) is no usable reference here:
/// in the SPSC pattern it fails almost always (docs/performance.md, "Measurements behind the
/// code").
struct moodycamel_queue {
    static constexpr const char* name = "moodycamel";
    moodycamel::ConcurrentQueue<std::uint64_t> q{queue_capacity};
    bool try_push(std::uint64_t v) noexcept { return q.enqueue(v); }
    bool try_pop(std::uint64_t& v) noexcept { return q.try_dequeue(v); }
    std::size_t approx_size() const noexcept { return q.size_approx(); }
};
#endif

template <class Queue>
struct shared_queue {
    static inline std::unique_ptr<Queue> instance;  // set by thread 0 before the start barrier
};

template <class Queue>
void bm_spsc(benchmark::State& state) {
    if (state.thread_index() == 0) {
        shared_queue<Queue>::instance = std::make_unique<Queue>();
    }
    std::uint64_t expected = 0;
    for (auto _ : state) {
        Queue& q = *shared_queue<Queue>::instance;
        if (state.thread_index() == 0) {
            while (!q.try_push(expected)) {
                cpu_relax();
            }
        } else {
            std::uint64_t v = 0;
            while (!q.try_pop(v)) {
                cpu_relax();
            }
            if (v != expected) {
                wb::die(std::string(Queue::name) + ": SPSC order broken");
            }
        }
        ++expected;
    }
    if (state.thread_index() == 0) {
        state.SetItemsProcessed(state.iterations());
        if (shared_queue<Queue>::instance->approx_size() != 0) {
            wb::die(std::string(Queue::name) + ": SPSC run left elements behind");
        }
        shared_queue<Queue>::instance.reset();
    }
}

template <class Queue>
void bm_mpmc(benchmark::State& state) {
    if (state.thread_index() == 0) {
        shared_queue<Queue>::instance = std::make_unique<Queue>();
    }
    std::uint64_t sum_pushed = 0;
    std::uint64_t sum_popped = 0;
    for (auto _ : state) {
        Queue& q = *shared_queue<Queue>::instance;
        const std::uint64_t v = sum_pushed + 1;
        while (!q.try_push(v)) {
            cpu_relax();
        }
        sum_pushed += 1;
        std::uint64_t out = 0;
        while (!q.try_pop(out)) {
            cpu_relax();
        }
        benchmark::DoNotOptimize(out);
        sum_popped += 1;
    }
    if (sum_pushed != sum_popped) {
        wb::die(std::string(Queue::name) + ": MPMC pushes and pops do not balance");
    }
    state.SetItemsProcessed(state.iterations());
    if (state.thread_index() == 0) {
        if (shared_queue<Queue>::instance->approx_size() != 0) {
            wb::die(std::string(Queue::name) + ": MPMC run left elements behind");
        }
        shared_queue<Queue>::instance.reset();
    }
}

// `fifo`: whether the queue keeps one order for all elements; the SPSC benchmark checks it. A
// sharded queue does not (a producer whose ring is full spills into the next), so it skips SPSC.
template <class Queue>
void register_queue(bool fifo = true) {
    const std::string tag = std::string("/") + Queue::name;
    if (fifo) {
        benchmark::RegisterBenchmark(("BM_queue_spsc" + tag).c_str(), bm_spsc<Queue>)
            ->Threads(2)
            ->UseRealTime();
    }
    auto* mpmc = benchmark::RegisterBenchmark(("BM_queue_mpmc" + tag).c_str(), bm_mpmc<Queue>)
                     ->Threads(1)
                     ->Threads(2)
                     ->UseRealTime();
    if (wb::env_knob("WORKERPOOL_BENCH_MANYCORE", 0) != 0) {
        mpmc->Threads(4)->Threads(8)->Threads(16);
    }
}

const bool registered = [] {
    register_queue<ours>();
    register_queue<ours_sharded>(false);
#ifdef WORKERPOOL_BENCH_HAVE_MOODYCAMEL
    register_queue<moodycamel_queue>();
#endif
    return true;
}();

}  // namespace
