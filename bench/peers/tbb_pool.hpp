#pragma once

// Peers built on oneTBB, both unbounded and bounded through bounded_gate on request:
//   onetbb             task_arena::enqueue: fire-and-forget tasks on an arena of `workers`
//                      threads, no slot reserved for the submitting thread (oneTBB's slow path:
//                      every task goes through the arena's shared FIFO).
//   onetbb_task_group  task_group::run inside a task_arena (oneTBB's fast path): the arena reserves
//                      one slot per producer, and a producer runs its whole submission loop inside
//                      task_arena::execute (the adapter's `produce`), so each submit spawns the
//                      task into the producer's own deque, from which the workers steal it. A
//                      submit from outside the arena (the wake-up and burst benchmarks) enters it
//                      for that one call.
//
// oneTBB keeps a process-wide pool of worker threads whose size defaults to the core count minus
// one; a global_control raises it so the arena really gets `workers` threads. oneTBB workers spin
// for a while before they sleep, which shows in the idle-CPU and wake-up numbers.

#include "../support.hpp"
#include "bounded_gate.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <cstddef>
#include <utility>

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

template <class Handler>
class tbb_task_group_pool {
public:
    static constexpr const char* name = "onetbb_task_group";

    tbb_task_group_pool(pool_config config, Handler handler)
        : handler_(handler), gate_(config.capacity),
          parallelism_(oneapi::tbb::global_control::max_allowed_parallelism,
                       std::size_t{config.workers} + config.producers),
          // `workers` slots for oneTBB's workers plus one reserved for each producer thread
          arena_(static_cast<int>(config.workers + config.producers), config.producers) {
        arena_.initialize();
    }
    tbb_task_group_pool(const tbb_task_group_pool&) = delete;
    tbb_task_group_pool& operator=(const tbb_task_group_pool&) = delete;

    /// Waits for every task of the group (a task_group must be waited for before it is
    /// destroyed); the benchmarks have already seen them all run.
    ~tbb_task_group_pool() {
        arena_.execute([this] { group_.wait(); });
    }

    /// Runs `body`, one producer's whole submission loop, inside the arena.
    template <class Body>
    void produce(Body&& body) {
        arena_.execute(std::forward<Body>(body));
    }

    /// Spawns a task running the handler on `j`; inside `produce` the thread is already in the
    /// arena, and `execute` only checks that.
    void submit(job j) {
        gate_.acquire();
        arena_.execute([this, j] {
            group_.run([this, h = handler_, j] {  // oneTBB calls the functor as const
                gate_.release();
                job request = j;
                h(request);
            });
        });
    }

private:
    Handler handler_;
    bounded_gate gate_;
    oneapi::tbb::global_control parallelism_;
    oneapi::tbb::task_arena arena_;
    oneapi::tbb::task_group group_;
};

}  // namespace workerpool_bench
