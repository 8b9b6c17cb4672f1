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

#include <algorithm>
#include <cstddef>
#include <utility>

namespace workerpool_bench {

namespace detail {

/// What both oneTBB peers hold: the handler, the gate, a worker limit and an arena of `workers`
/// threads plus `reserved` slots kept for the threads that submit.
template <class Handler>
class tbb_arena {
protected:
    tbb_arena(pool_config config, Handler handler, unsigned reserved)
        : handler_(handler), gate_(config.capacity),
          // global_control counts the threads that submit too; at least one
          parallelism_(oneapi::tbb::global_control::max_allowed_parallelism,
                       std::size_t{config.workers} + std::max(reserved, 1U)),
          arena_(static_cast<int>(config.workers + reserved), reserved) {
        arena_.initialize();
    }

    /// The task for `j`: gives its gate slot back, then runs the handler. oneTBB calls it as
    /// const and may run it after the submit returned, so it holds copies, not references.
    [[nodiscard]] auto task(job j) {
        return [this, h = handler_, j] {
            gate_.release();
            job request = j;
            h(request);
        };
    }

    oneapi::tbb::task_arena& arena() noexcept { return arena_; }
    bounded_gate& gate() noexcept { return gate_; }

private:
    Handler handler_;
    bounded_gate gate_;
    oneapi::tbb::global_control parallelism_;
    oneapi::tbb::task_arena arena_;
};

}  // namespace detail

template <class Handler>
class tbb_pool : private detail::tbb_arena<Handler> {
public:
    static constexpr const char* name = "onetbb";

    tbb_pool(pool_config config, Handler handler)
        : detail::tbb_arena<Handler>(config, handler, 0) {}
    tbb_pool(const tbb_pool&) = delete;
    tbb_pool& operator=(const tbb_pool&) = delete;

    /// Pre: every submitted task has run (the benchmarks wait for their counters first). oneTBB
    /// has no "wait for enqueued tasks" on an arena; the tasks copy the handler and touch this
    /// object only before they call it, so a task still unwinding cannot reach freed memory.
    ~tbb_pool() = default;

    void submit(job j) {
        this->gate().acquire();
        this->arena().enqueue(this->task(j));
    }
};

template <class Handler>
class tbb_task_group_pool : private detail::tbb_arena<Handler> {
public:
    static constexpr const char* name = "onetbb_task_group";

    // One slot reserved for each producer thread.
    tbb_task_group_pool(pool_config config, Handler handler)
        : detail::tbb_arena<Handler>(config, handler, config.producers) {}
    tbb_task_group_pool(const tbb_task_group_pool&) = delete;
    tbb_task_group_pool& operator=(const tbb_task_group_pool&) = delete;

    /// Waits for every task of the group (a task_group must be waited for before it is
    /// destroyed); the benchmarks have already seen them all run.
    ~tbb_task_group_pool() {
        this->arena().execute([this] { group_.wait(); });
    }

    /// Runs `body`, one producer's whole submission loop, inside the arena.
    template <class Body>
    void produce(Body&& body) {
        this->arena().execute(std::forward<Body>(body));
    }

    /// Spawns a task running the handler on `j`; inside `produce` the thread is already in the
    /// arena, and `execute` only checks that.
    void submit(job j) {
        this->gate().acquire();
        this->arena().execute([this, j] { group_.run(this->task(j)); });
    }

private:
    oneapi::tbb::task_group group_;  // destroyed before the arena its tasks ran in
};

}  // namespace workerpool_bench
