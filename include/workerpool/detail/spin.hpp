#pragma once

/// @file
/// `detail::spin_until`: the short poll a worker (for work) or a producer (for room) makes before
/// it pays for a sleep and a wake-up.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>

#include <cstdint>
#include <thread>

namespace workerpool::detail {

/// Polls `ready(slow_check)` for up to `budget_ns`: 64 pauses, then yields so that a thread
/// sharing the core can make the progress we wait for. `slow_check` is true every 8th poll, for
/// conditions too costly to test each time. Returns whether `ready` became true.
template <class Ready>
bool spin_until(std::int64_t budget_ns, Ready&& ready) noexcept {
    if (budget_ns <= 0) {
        return false;
    }
    std::int64_t end = 0;
    for (unsigned i = 0;; ++i) {
        const bool slow_check = (i & 7) == 0;
        if (ready(slow_check)) {
            return true;
        }
        if (i < 64) {
            cpu_relax();
            continue;
        }
        if (slow_check) {
            const std::int64_t now = now_ns();
            if (end == 0) {
                end = add_saturated(now, budget_ns);
            } else if (now >= end) {
                return false;
            }
        }
        std::this_thread::yield();
    }
}

}  // namespace workerpool::detail
