#pragma once

// Peer: oneTBB's task_arena::enqueue (fire-and-forget tasks on an arena of `workers` threads, no
// slot reserved for the submitting thread). Unbounded; bounded through bounded_gate on request.
//
// oneTBB keeps a process-wide pool of worker threads whose size defaults to the core count minus
// one; a global_control raises it so the arena really gets `workers` threads. oneTBB workers spin
// for a while before they sleep, which shows in the idle-CPU and wake-up numbers.

#include "../support.hpp"
#include "bounded_gate.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include <cstddef>

namespace workerpool_bench {

template <class Handler>
class tbb_pool {
public:
    static constexpr const char* name = "onetbb";

    tbb_pool(pool_config config, Handler handler)
        : handler_(handler), gate_(config.capacity),
          parallelism_(oneapi::tbb::global_control::max_allowed_parallelism,
                       std::size_t{config.workers} + 1),
          arena_(static_cast<int>(config.workers), 0) {
        arena_.initialize();
    }
    tbb_pool(const tbb_pool&) = delete;
    tbb_pool& operator=(const tbb_pool&) = delete;

    /// Pre: every submitted task has run (the benchmarks wait for their counters first). oneTBB
    /// has no "wait for enqueued tasks" on an arena; the tasks copy the handler and touch this
    /// object only before they call it, so a task still unwinding cannot reach freed memory.
    ~tbb_pool() = default;

    void submit(job j) {
        gate_.acquire();
        arena_.enqueue([this, h = handler_, j] {  // oneTBB calls the functor as const
            gate_.release();
            job request = j;
            h(request);
        });
    }

private:
    Handler handler_;
    bounded_gate gate_;
    oneapi::tbb::global_control parallelism_;
    oneapi::tbb::task_arena arena_;
};

}  // namespace workerpool_bench
