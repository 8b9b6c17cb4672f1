#pragma once

// Peer: a moodycamel::BlockingConcurrentQueue of requests (typed, like our dispatcher: no
// std::function) drained by `workers` std::threads blocked in wait_dequeue. Unbounded; bounded
// through bounded_gate on request. Shutdown pushes one stop item per worker, which is fine for
// an unbounded queue.

#include "../support.hpp"
#include "bounded_gate.hpp"

#if __has_include(<concurrentqueue/blockingconcurrentqueue.h>)
#include <concurrentqueue/blockingconcurrentqueue.h>
#else
#include <moodycamel/blockingconcurrentqueue.h>
#endif

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

}  // namespace workerpool_bench
