#pragma once

// Peer: the pool most hand-written code ends up with. One std::mutex guards a
// std::deque<std::function<void()>>; two condition variables give back-pressure (not_full) and
// wake-ups (not_empty). Bounded like our dispatcher, so submit blocks while full.

#include "../support.hpp"

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace workerpool_bench {

template <class Handler>
class mutex_pool {
public:
    static constexpr const char* name = "mutex_cv";

    mutex_pool(pool_config config, Handler handler)
        : handler_(handler),
          capacity_(config.capacity == 0 ? natural_bounded_capacity() : config.capacity) {
        for (unsigned i = 0; i < config.workers; ++i) {
            workers_.emplace_back([this] { worker_loop(); });
        }
    }
    mutex_pool(const mutex_pool&) = delete;
    mutex_pool& operator=(const mutex_pool&) = delete;

    /// Drains what is queued, then joins the workers.
    ~mutex_pool() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        not_empty_.notify_all();
        for (auto& t : workers_) {
            t.join();
        }
    }

    /// Queues a call of the handler on `j`; blocks while `capacity` tasks are queued.
    void submit(job j) {
        {
            std::unique_lock lock(mutex_);
            not_full_.wait(lock, [this] { return tasks_.size() < capacity_; });
            // The closure (two words) fits std::function's small buffer: no allocation.
            tasks_.emplace_back([h = handler_, j]() mutable { h(j); });
        }
        not_empty_.notify_one();
    }

private:
    void worker_loop() {
        for (;;) {
            std::function<void()> task;
            {
                std::unique_lock lock(mutex_);
                not_empty_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
                if (tasks_.empty()) {
                    return;  // stopping and drained
                }
                task = std::move(tasks_.front());
                tasks_.pop_front();
            }
            not_full_.notify_one();
            task();
        }
    }

    Handler handler_;
    const std::size_t capacity_;
    std::mutex mutex_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
    std::deque<std::function<void()>> tasks_;  // guarded by mutex_
    bool stopping_ = false;                    // guarded by mutex_
    std::vector<std::thread> workers_;         // last: started after everything above exists
};

}  // namespace workerpool_bench
