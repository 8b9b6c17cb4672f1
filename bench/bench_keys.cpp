// Per-key ordering (issue 20, "Costs"): one producer, two workers, no-op requests, each iteration
// WORKERPOOL_BENCH_KEYS_REQUESTS requests (default 1'000'000), request i carrying key
// i % keys + 1, so each key has requests / keys of them, interleaved with every other key's.
//
//   BM_keys_1p2w/plain              the dispatcher as bench_pool's `workerpool`, `submit(job)`
//   BM_keys_1p2w/keyed/<keys>       the same pool, `submit(job, {.key = ...})`
//   BM_keys_1p2w/strand/<keys>      a hand-rolled "strand per key" pool (`strand_pool` below): a
//                                   mutex, a map of pending requests per key, a FIFO of ready
//                                   keys, two std::threads and a condition variable
//   BM_keys_memory/keyed/<keys>     live heap bytes (every operator new minus every delete,
//   BM_keys_memory/strand/<keys>    counted only during the measurement) with all the requests
//                                   queued and none started, and again once they have all run
//
// Both keyed pools bound what they hold to 1024 requests in the throughput runs (the producer
// blocks when full); the memory runs hold every request at once (capacity 2^20, the pool paused
// or its threads not started yet). items_per_second is requests per second through the pool.

#include <workerpool/workerpool.hpp>

#include "peers/workerpool_pool.hpp"
#include "support.hpp"

#include <benchmark/benchmark.h>
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <vector>

namespace wb = workerpool_bench;

namespace {

// Live heap bytes, counted while `counting` is on (relaxed, all of them: plain counters, read by
// the benchmark thread after it synchronised with the pool's threads through wait_for/wait_idle).
std::atomic<bool> counting{false};
std::atomic<std::int64_t> live_bytes{0};

void* counted_alloc(std::size_t n, std::size_t align) {
    void* p = align <= alignof(std::max_align_t)
                  ? std::malloc(n == 0 ? 1 : n)
                  : std::aligned_alloc(align, (n + align - 1) / align * align);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    if (counting.load(std::memory_order_relaxed)) {
        live_bytes.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)),
                             std::memory_order_relaxed);
    }
    return p;
}

void counted_free(void* p) noexcept {
    if (p == nullptr) {
        return;
    }
    if (counting.load(std::memory_order_relaxed)) {
        live_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                             std::memory_order_relaxed);
    }
    std::free(p);
}

std::uint64_t requests() {
    static const std::uint64_t n = wb::env_knob("WORKERPOOL_BENCH_KEYS_REQUESTS", 1'000'000);
    return n;
}

std::uint64_t key_of(std::uint64_t i, std::uint64_t keys) {
    return i % keys + 1;
}

// A hand-rolled "strand per key" pool, as one would write it without a library: requests of one
// key run one at a time in submit order, ready keys take turns, and at most `capacity` requests
// are held (the producer waits for room), like the dispatcher's bound.
class strand_pool {
public:
    strand_pool(unsigned workers, std::size_t capacity, wb::bench_handler handler)
        : workers_(workers), capacity_(capacity), handler_(handler) {}
    strand_pool(const strand_pool&) = delete;
    strand_pool& operator=(const strand_pool&) = delete;
    ~strand_pool() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        work_.notify_all();
        threads_.clear();  // joins
    }

    void start() {
        for (unsigned i = 0; i < workers_; ++i) {
            threads_.emplace_back([this] { run(); });
        }
    }

    void submit(std::uint64_t key, wb::job j) {
        std::unique_lock lock(mutex_);
        room_.wait(lock, [&] { return held_ < capacity_; });
        ++held_;
        auto [it, fresh] = pending_.try_emplace(key);
        it->second.push_back(j);
        if (fresh) {  // the key had nothing pending or running: it is ready now
            ready_.push_back(key);
            if (sleepers_ != 0) {
                work_.notify_one();
            }
        }
    }

private:
    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            ++sleepers_;
            work_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
            --sleepers_;
            if (ready_.empty()) {
                return;  // stopping
            }
            const std::uint64_t key = ready_.front();
            ready_.pop_front();
            wb::job j = pending_.find(key)->second.front();
            lock.unlock();
            handler_(j);
            lock.lock();
            auto it = pending_.find(key);
            it->second.pop_front();
            if (it->second.empty()) {
                pending_.erase(it);
            } else {
                ready_.push_back(key);  // its next request, behind the keys already ready
            }
            if (held_-- == capacity_) {
                room_.notify_one();
            }
        }
    }

    const unsigned workers_;
    const std::size_t capacity_;
    const wb::bench_handler handler_;
    std::mutex mutex_;
    std::condition_variable work_;  // workers wait for a ready key
    std::condition_variable room_;  // the producer waits for room
    std::unordered_map<std::uint64_t, std::deque<wb::job>> pending_;  // guarded by mutex_
    std::deque<std::uint64_t> ready_;  // guarded by mutex_: keys whose front may start
    std::size_t held_ = 0;             // guarded by mutex_
    std::size_t sleepers_ = 0;         // guarded by mutex_
    bool stopping_ = false;            // guarded by mutex_
    std::vector<std::jthread> threads_;
};

constexpr std::size_t bounded = 1024;

enum class how { plain, keyed, strand };

template <how How>
void bm_keys(benchmark::State& state) {
    const std::uint64_t n = requests();
    const auto keys = static_cast<std::uint64_t>(state.range(0));
    wb::bench_context ctx(wb::work_kind::noop);
    strand_pool strands(2, bounded, wb::bench_handler{&ctx});  // started only for its own runs
    auto o = wb::workerpool_options(2);
    o.capacity = bounded;
    o.min_workers = How == how::strand ? 0 : 2;  // no idle workers beside the strand pool
    workerpool::dispatcher<wb::job> pool(
        [handler = wb::bench_handler{&ctx}](wb::job& j, const std::stop_token&) { handler(j); }, o);
    if constexpr (How == how::strand) {
        strands.start();
    }
    std::uint64_t target = 0;
    for (auto _ : state) {
        target += n;
        const auto t0 = wb::clock_type::now();
        for (std::uint64_t i = 0; i < n; ++i) {
            if constexpr (How == how::strand) {
                strands.submit(key_of(i, keys), wb::job{i});
            } else {
                const workerpool::job_options jo{.key = How == how::keyed ? key_of(i, keys) : 0};
                if (pool.submit(wb::job{i}, jo) != workerpool::submit_status::accepted) {
                    wb::die("submit refused a request of an open pool");
                }
            }
        }
        ctx.done.wait_for(target);
        state.SetIterationTime(std::chrono::duration<double>(wb::clock_type::now() - t0).count());
    }
    (void)pool.shutdown(std::chrono::seconds(30));
    state.SetItemsProcessed(static_cast<std::int64_t>(target));
}

// Live bytes with every request held and none started, then after all of them ran.
template <how How>
void bm_memory(benchmark::State& state) {
    const std::uint64_t n = requests();
    const auto keys = static_cast<std::uint64_t>(state.range(0));
    const std::size_t capacity = std::size_t{1} << 20;
    if (n > capacity) {
        wb::die("BM_keys_memory holds every request at once: at most 2^20 of them");
    }
    double held = 0;
    double drained = 0;
    for (auto _ : state) {
        wb::bench_context ctx(wb::work_kind::noop);
        strand_pool strands(2, capacity, wb::bench_handler{&ctx});
        auto o = wb::workerpool_options(2);
        o.capacity = capacity;
        o.min_workers = How == how::strand ? 0 : 2;
        workerpool::dispatcher<wb::job> pool(
            [handler = wb::bench_handler{&ctx}](wb::job& j, const std::stop_token&) { handler(j); },
            o);
        pool.pause();
        live_bytes.store(0, std::memory_order_relaxed);
        counting.store(true, std::memory_order_relaxed);
        const auto t0 = wb::clock_type::now();
        for (std::uint64_t i = 0; i < n; ++i) {
            if constexpr (How == how::strand) {
                strands.submit(key_of(i, keys), wb::job{i});
            } else if (pool.try_submit(wb::job{i}, {.key = key_of(i, keys)}) !=
                       workerpool::submit_status::accepted) {
                wb::die("try_submit refused a request of a pool with room");
            }
        }
        held = static_cast<double>(live_bytes.load(std::memory_order_relaxed));
        if constexpr (How == how::strand) {
            strands.start();
        } else {
            pool.resume();
        }
        ctx.done.wait_for(n);
        pool.wait_idle();
        state.SetIterationTime(std::chrono::duration<double>(wb::clock_type::now() - t0).count());
        // After the threads are joined: wait_idle may return before a worker has let go of the
        // last key its request held (the request has ended; the key's entry goes right after).
        (void)pool.shutdown(std::chrono::seconds(30));
        drained = static_cast<double>(live_bytes.load(std::memory_order_relaxed));
        counting.store(false, std::memory_order_relaxed);
    }
    state.counters["held_MiB"] = held / (1024.0 * 1024.0);
    state.counters["held_B_per_key"] = held / static_cast<double>(keys);
    state.counters["drained_KiB"] = drained / 1024.0;
}

BENCHMARK(bm_keys<how::plain>)->Name("BM_keys_1p2w/plain")->Arg(0)->UseManualTime();
BENCHMARK(bm_keys<how::keyed>)->Name("BM_keys_1p2w/keyed")->Arg(100'000)->Arg(16)->UseManualTime();
BENCHMARK(bm_keys<how::strand>)
    ->Name("BM_keys_1p2w/strand")
    ->Arg(100'000)
    ->Arg(16)
    ->UseManualTime();
BENCHMARK(bm_memory<how::keyed>)
    ->Name("BM_keys_memory/keyed")
    ->Arg(100'000)
    ->Arg(16)
    ->Iterations(1)
    ->UseManualTime();
BENCHMARK(bm_memory<how::strand>)
    ->Name("BM_keys_memory/strand")
    ->Arg(100'000)
    ->Arg(16)
    ->Iterations(1)
    ->UseManualTime();

}  // namespace

// Every form of operator new and delete, counted (see counted_alloc).
void* operator new(std::size_t n) {
    return counted_alloc(n, 0);
}
void* operator new[](std::size_t n) {
    return counted_alloc(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a) {
    return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
    return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_alloc(n, 0);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_alloc(n, 0);
    } catch (...) {
        return nullptr;
    }
}
void operator delete(void* p) noexcept {
    counted_free(p);
}
void operator delete[](void* p) noexcept {
    counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    counted_free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    counted_free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    counted_free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    counted_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    counted_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    counted_free(p);
}
