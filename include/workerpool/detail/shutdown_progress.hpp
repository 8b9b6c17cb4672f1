#pragma once

/// @file
/// `detail::shutdown_progress`: how far a dispatcher's shutdown got and what it collected, so
/// that a call cut short by out of memory is taken up by the next one.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace workerpool::detail {

/// The steps of a shutdown that run once (docs/design.md, "Shutdown, step by step").
enum class shutdown_step {
    none,    ///< Not begun.
    begun,   ///< Intake closed, `shutdown_begin` emitted, the grace's end fixed (step 1).
    joined,  ///< Drained, cancelled and joined (steps 2 to 5): only the hand-back is left.
};

/// What a shutdown keeps between calls: a call that throws `std::bad_alloc` leaves it here, and
/// the next call (or the destructor) goes on from `at`. Guarded by the dispatcher's shutdown lock.
template <class Envelope>
struct shutdown_progress {
    shutdown_step at = shutdown_step::none;
    std::int64_t grace_end = 0;
    bool grace_over = false;        ///< Step 4 cancelled something.
    std::size_t stuck_workers = 0;  ///< Step 5's count.
    std::size_t before_drain = 0;   ///< Collected before step 6.
    std::vector<Envelope> left;     ///< Not processed, with its attempt history.
};

}  // namespace workerpool::detail
