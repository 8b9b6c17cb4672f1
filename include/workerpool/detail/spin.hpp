#pragma once

/// @file
/// `detail::spin_until`: the short poll a worker (for work) or a producer (for room) makes before
/// it pays for a sleep and a wake-up.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>

#include <cstdint>
#include <thread>
#include <utility>

namespace workerpool::detail {

/// Pauses a spin makes before its first yield on a core of its own: they see work sooner than a
/// yield (about 0.5 us on the 2-core VM) would.
inline constexpr unsigned spin_pauses_alone = 64;
/// Pauses before the first yield on a shared core: there the thread we wait for may be the one
/// waiting for this core, and every pause delays it.
inline constexpr unsigned spin_pauses_shared = 8;
/// A yield that takes longer than this ran another thread: the core is shared (a bare
/// `sched_yield` takes about a microsecond, another thread's turn much longer).
inline constexpr std::int64_t shared_core_yield_ns = 5'000;
/// After a yield that gave the core away, the thread keeps the short pause until this many of its
/// spins in a row yielded and got the core straight back each time. One such spin proves little:
/// right after another thread's turn the scheduler often returns the core at once.
inline constexpr unsigned shared_core_memory = 8;

// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): per thread, own thread only
inline thread_local unsigned shared_core_credit = 0;

/// The pauses this thread's next spin makes before it yields.
[[nodiscard]] inline unsigned spin_pauses() noexcept {
    return shared_core_credit != 0 ? spin_pauses_shared : spin_pauses_alone;
}

/// The thread's shared-core credit after a spin that yielded: one that gave its core away (one of
/// its yields ran another thread) sets it to `shared_core_memory`; one whose yields all came
/// straight back takes one off. (A spin that never yielded says nothing and leaves it.)
[[nodiscard]] constexpr unsigned credit_after_spin(unsigned credit, bool gave_core) noexcept {
    if (gave_core) {
        return shared_core_memory;
    }
    return credit != 0 ? credit - 1 : 0;
}

/// `spin_until` with the yield given: `yield()` in place of `std::this_thread::yield()` (tests
/// make a yield that comes straight back, or one that takes long, without depending on the
/// machine's load).
template <class Ready, class Yield>
bool spin_until(std::int64_t budget_ns, Ready&& ready, Yield&& yield) noexcept {
    if (budget_ns <= 0) {
        return false;
    }
    const unsigned pauses = spin_pauses();
    std::int64_t end = 0;  // set at the first yield: the budget counts from there
    bool gave_core = false;
    const auto finish = [&](bool result) noexcept {
        if (end != 0) {  // it yielded: a spin that did not says nothing (no store either)
            shared_core_credit = credit_after_spin(shared_core_credit, gave_core);
        }
        return result;
    };
    for (unsigned i = 0;; ++i) {
        if (ready((i & 7) == 0)) {
            return finish(true);
        }
        if (i < pauses) {
            cpu_relax();
            continue;
        }
        const std::int64_t before = now_ns();
        if (end == 0) {
            end = add_saturated(before, budget_ns);
        } else if (before >= end) {
            return finish(false);
        }
        yield();
        gave_core = gave_core || now_ns() - before > shared_core_yield_ns;
    }
}

/// Polls `ready(slow_check)` for up to `budget_ns`: `spin_pauses()` pauses, then yields so that a
/// thread sharing the core can make the progress we wait for. `slow_check` is true every 8th
/// poll, for conditions too costly to test each time. Returns whether `ready` became true. Each
/// yield is timed; a spin that yielded tells the thread's next spins whether its core is shared
/// (`credit_after_spin`).
template <class Ready>
bool spin_until(std::int64_t budget_ns, Ready&& ready) noexcept {
    return spin_until(budget_ns, std::forward<Ready>(ready), [] { std::this_thread::yield(); });
}

}  // namespace workerpool::detail
