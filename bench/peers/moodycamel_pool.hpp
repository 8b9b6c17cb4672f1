#pragma once

// Peers built on moodycamel::BlockingConcurrentQueue, both typed like our dispatcher (the queue
// holds the request, no std::function), unbounded, and bounded through bounded_gate on request:
//   moodycamel        workers block in wait_dequeue; shutdown pushes one stop item per worker,
//                     which is fine for an unbounded queue.
//   moodycamel_typed  the pool of issue 18 §1: the queue holds the request type itself, workers
//                     loop on wait_dequeue_timed with a 10 ms timeout and look at a stop flag
//                     between waits, and one shared atomic counter counts every request run.

#include "../support.hpp"
#include "bounded_gate.hpp"

#if __has_include(<concurrentqueue/blockingconcurrentqueue.h>)
#include <concurrentqueue/blockingconcurrentqueue.h>
#else
#include <moodycamel/blockingconcurrentqueue.h>
#endif

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace workerpool_bench {

template <class Handler>
class moodycamel_pool {
public:
    static constexpr const char* name = "moodycamel";

    moodycamel_pool(pool_config config, Handler handler)
        // 1024: blocks preallocated up front; the queue grows past them as needed.
        : handler_(handler), gate_(config.capacity), queue_(1024) {
        for (unsigned i = 0; i < config.workers; ++i) {
            workers_.emplace_back([this] { worker_loop(); });
        }
    }
    moodycamel_pool(const moodycamel_pool&) = delete;
    moodycamel_pool& operator=(const moodycamel_pool&) = delete;

    /// Drains what is queued (stop items come after this thread's own submissions), then joins.
    ~moodycamel_pool() {
        for (std::size_t i = 0; i < workers_.size(); ++i) {
            queue_.enqueue(item{job{}, true});
        }
        for (auto& t : workers_) {
            t.join();
        }
    }

    void submit(job j) {
        gate_.acquire();
        if (!queue_.enqueue(item{j, false})) {
            die("moodycamel enqueue failed (allocation)");
        }
    }

private:
    struct item {
        job request;
        bool stop;
    };

    void worker_loop() {
        moodycamel::ConsumerToken token(queue_);
        item it{};
        for (;;) {
            queue_.wait_dequeue(token, it);
            if (it.stop) {
                return;
            }
            gate_.release();
            handler_(it.request);
        }
    }

    Handler handler_;
    bounded_gate gate_;
    moodycamel::BlockingConcurrentQueue<item> queue_;
    std::vector<std::thread> workers_;  // last: started after the queue exists
};

template <class Handler>
class moodycamel_typed_pool {
public:
    static constexpr const char* name = "moodycamel_typed";

    moodycamel_typed_pool(pool_config config, Handler handler)
        // 1024: blocks preallocated up front; the queue grows past them as needed.
        : handler_(handler), gate_(config.capacity), queue_(1024) {
        for (unsigned i = 0; i < config.workers; ++i) {
            workers_.emplace_back([this] { worker_loop(); });
        }
    }
    moodycamel_typed_pool(const moodycamel_typed_pool&) = delete;
    moodycamel_typed_pool& operator=(const moodycamel_typed_pool&) = delete;

    /// Raises the stop flag; each worker sees it within one 10 ms wait, runs what is still
    /// queued, and returns.
    ~moodycamel_typed_pool() {
        // [BM1] publishes every submit; pairs with [BM2]
        stop_.store(true, std::memory_order_release);
        for (auto& t : workers_) {
            t.join();
        }
    }

    void submit(job j) {
        gate_.acquire();
        if (!queue_.enqueue(std::move(j))) {
            die("moodycamel enqueue failed (allocation)");
        }
    }

private:
    void worker_loop() {
        moodycamel::ConsumerToken token(queue_);
        job j{};
        for (;;) {
            if (queue_.wait_dequeue_timed(token, j, std::chrono::milliseconds(10))) {
                run(j);
                continue;
            }
            // [BM2] sees every submit made before [BM1]: what is queued now is all there will be.
            if (stop_.load(std::memory_order_acquire)) {
                while (queue_.try_dequeue(token, j)) {
                    run(j);
                }
                return;
            }
        }
    }

    void run(job& j) {
        gate_.release();
        handler_(j);
        // relaxed: statistics only (the one shared counter of §1's pool; nothing reads it here)
        completed_.fetch_add(1, std::memory_order_relaxed);
    }

    Handler handler_;
    bounded_gate gate_;
    moodycamel::BlockingConcurrentQueue<job> queue_;
    alignas(cache_line) std::atomic<std::uint64_t> completed_{0};  // the shared counter of §1
    std::atomic<bool> stop_{false};                                // [BM1]/[BM2]
    std::vector<std::thread> workers_;  // last: started after the queue exists
};

}  // namespace workerpool_bench
