#pragma once

/// @file
/// `detail::spin_until`: the short poll a worker (for work) or a producer (for room) makes before
/// it pays for a sleep and a wake-up.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>

#include <cstdint>
#include <thread>

namespace workerpool::detail {

/// Pauses before a spin's first yield on this thread: `spin_pauses_alone` while its yields come
/// straight back (no other thread wanted its core), `spin_pauses_shared` after a yield gave the
/// core away for a while. On a shared core the thread we wait for may be the one waiting for this
/// core, and every pause delays it; on a core of our own, pauses react faster than yields.
inline constexpr unsigned spin_pauses_alone = 64;
inline constexpr unsigned spin_pauses_shared = 8;
/// A yield that takes longer than this ran another thread (a bare `sched_yield` takes about a
/// microsecond, a thread's turn on the core much longer).
inline constexpr std::int64_t shared_core_yield_ns = 5'000;
inline thread_local unsigned spin_pauses = spin_pauses_alone;

/// Polls `ready(slow_check)` for up to `budget_ns`: a few pauses (see `spin_pauses`), then yields
/// so that a thread sharing the core can make the progress we wait for. `slow_check` is true every
/// 8th poll, for conditions too costly to test each time. Returns whether `ready` became true.
template <class Ready>
bool spin_until(std::int64_t budget_ns, Ready&& ready) noexcept {
    if (budget_ns <= 0) {
        return false;
    }
    const unsigned pauses = spin_pauses;
    std::int64_t end = 0;
    for (unsigned i = 0;; ++i) {
        const bool slow_check = (i & 7) == 0;
        if (ready(slow_check)) {
            return true;
        }
        if (i < pauses) {
            cpu_relax();
            continue;
        }
        if (end == 0) {  // the first yield, timed: did another thread want this core?
            const std::int64_t before = now_ns();
            end = add_saturated(before, budget_ns);
            std::this_thread::yield();
            spin_pauses =
                now_ns() - before > shared_core_yield_ns ? spin_pauses_shared : spin_pauses_alone;
            continue;
        }
        if (slow_check && now_ns() >= end) {
            return false;
        }
        std::this_thread::yield();
    }
}

}  // namespace workerpool::detail
