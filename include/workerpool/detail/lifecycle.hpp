#pragma once

/// @file
/// `detail::lifecycle`: the one phase a pool is in, which only moves forward.

#include <workerpool/detail/cache_line.hpp>

#include <atomic>
#include <cstdint>

namespace workerpool::detail {

/// A pool's phase. Each one implies the ones before it.
enum class phase : std::uint8_t {
    running,     ///< taking requests
    closed,      ///< intake closed (the queue refuses pushes); workers still serve; no scaling
    draining,    ///< shutdown: workers exit once the closed queue is empty; retries handed back
    cancelling,  ///< shutdown's grace is over: workers exit after their attempt, which is stopped
    stopped,     ///< shutdown is done; a later call returns at once
};

/// The pool's phase: running → closed → draining → cancelling → stopped, never back.
///
/// The queue keeps its own close bit (a push is ordered before or after it; see `bounded_queue`);
/// `closed` here follows it, for the pool's own decisions (scaling, starting workers). Every
/// change is `seq_cst`: a worker about to sleep reads the phase after listing itself idle, and
/// shutdown wakes every listed worker after changing it ([W1]'s other half).
///
/// Thread safety: every member from any thread.
class lifecycle {
public:
    /// Whether the phase is `p` or later. `seq_cst` where the read is the second half of a
    /// Dekker pair (a sleeper's last look); `relaxed` where it is a hint that is checked again.
    [[nodiscard]] bool
    at_least(phase p, std::memory_order order = std::memory_order_seq_cst) const noexcept {
        return phase_.load(order) >= p;
    }

    /// Moves the phase forward to `p`; returns whether this call moved it (false if it was at `p`
    /// or later already).
    bool advance(phase p) noexcept {
        phase current = phase_.load(std::memory_order_seq_cst);
        while (current < p) {
            // [L1] seq_cst, so also a release: what the caller did first (closing the queue) is
            // seen by a thread whose acquire load ([L2]) reads the new phase.
            if (phase_.compare_exchange_weak(current, p, std::memory_order_seq_cst)) {
                return true;
            }
        }
        return false;
    }

private:
    // Read by every worker on every round: a line of its own, written only at phase changes.
    alignas(cache_line) std::atomic<phase> phase_{phase::running};
};

static_assert(sizeof(lifecycle) == cache_line,
              "the phase, read on every worker round, fills a cache line of its own: it must not "
              "share one with busy state");

}  // namespace workerpool::detail
