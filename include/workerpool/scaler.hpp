#pragma once

/// @file
/// Scaling: `scale_metrics`, the `scale_policy` type, and the built-in `depth_policy` and
/// `wait_time_policy`.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>

namespace workerpool {

/// What the scaler knows at one tick, handed to a scaling policy.
struct scale_metrics {
    std::chrono::steady_clock::time_point now;  ///< The tick's time (injected in tests).
    std::size_t queue_depth = 0;  ///< Requests queued plus requests waiting out a retry backoff.
    std::size_t workers = 0;  ///< Workers that count as capacity (live, not retiring, not stuck).
    std::size_t busy_workers = 0;  ///< Of those, how many are running a handler.
    std::size_t idle_workers = 0;  ///< Of those, how many are asleep waiting for work.
    std::size_t min_workers = 0;   ///< The current lower limit.
    std::size_t max_workers = 0;   ///< The current upper limit.
    /// Estimated queue wait of a request arriving now, by Little's law: depth divided by the
    /// dequeue rate over the last tick. If nothing was dequeued while requests waited, the time
    /// since the last dequeue. Zero when the queue is empty.
    std::chrono::nanoseconds queue_wait{0};
};

/// A scaling policy: returns the worker count it wants, given the metrics of this tick.
/// The pool clamps the answer to [min_workers, max_workers]. Called only from the scaler thread,
/// so it may keep state without locks. It must not call back into the pool.
using scale_policy = std::function<std::size_t(const scale_metrics&)>;

namespace detail {

/// Returns `m.workers + add`, capped at `m.max_workers` without wrapping. Pre: `m.workers <=
/// m.max_workers`.
[[nodiscard]] constexpr std::size_t grow_by(const scale_metrics& m, std::size_t add) noexcept {
    return add >= m.max_workers - m.workers ? m.max_workers : m.workers + add;
}

/// The hysteresis both built-in policies share: remembers when the signal fell under the low mark
/// and when the pool last grew, and allows a shrink only after a quiet cool-down.
class shrink_gate {
public:
    /// One tick, given where the policy's signal stands: above the high mark (grow by `add`,
    /// capped at `max_workers`), above the low mark (hold), or at or below it (shed one worker
    /// once the signal has stayed there for `cooldown`, an idle worker exists and no growth
    /// happened within `cooldown`). Returns the wanted worker count.
    std::size_t step(const scale_metrics& m, bool above_high, bool above_low, std::size_t add,
                     std::chrono::nanoseconds cooldown) noexcept {
        const std::size_t current = std::clamp(m.workers, m.min_workers, m.max_workers);
        if (above_high && m.workers < m.max_workers) {
            note_growth(m.now);
            return grow_by(m, add);
        }
        if (above_low) {
            note_between_marks();
            return current;
        }
        return below_low_mark(m, cooldown) ? m.workers - 1 : current;
    }

    void note_growth(std::chrono::steady_clock::time_point now) noexcept {
        below_ = false;
        grew_ = true;
        last_growth_ = now;
    }
    void note_between_marks() noexcept { below_ = false; }

    /// Records that the signal is at or below the low mark now; returns whether to shed a worker.
    bool below_low_mark(const scale_metrics& m, std::chrono::nanoseconds cooldown) noexcept {
        if (!below_) {
            below_ = true;
            below_since_ = m.now;
        }
        const bool quiet_long_enough = m.now - below_since_ >= cooldown;
        const bool grown_recently = grew_ && m.now - last_growth_ < cooldown;
        return quiet_long_enough && !grown_recently && m.idle_workers > 0 &&
               m.workers > m.min_workers;
    }

private:
    bool below_ = false;
    bool grew_ = false;
    std::chrono::steady_clock::time_point below_since_{};
    std::chrono::steady_clock::time_point last_growth_{};
};

}  // namespace detail

/// The default policy: scales on queue depth, with hysteresis and a cool-down.
///
/// - Grows when `queue_depth > scale_up_depth`, by one worker per `scale_up_depth` queued
///   requests (so a burst of 10x the mark adds 10 workers at once instead of one per tick).
/// - Shrinks by one worker per tick when the depth has stayed at or below
///   `scale_down_ratio * scale_up_depth` for a whole `cooldown`, at least one worker is idle, and
///   no growth happened within the last `cooldown`. Between the two marks nothing changes, so a
///   steady load does not flap.
class depth_policy {
public:
    /// The thresholds; the dispatcher fills them from its `options`.
    struct config {
        /// Queue depth above which the policy grows; also the number of queued requests per
        /// added worker. Must be > 0.
        std::size_t scale_up_depth = 16;
        /// The low mark as a fraction of `scale_up_depth`: the policy may shrink once the depth
        /// stays at or below `scale_down_ratio * scale_up_depth`. In (0, 1].
        double scale_down_ratio = 0.75;
        /// How long the depth must stay at or below the low mark, and how long after the last
        /// growth the policy waits, before it sheds a worker.
        std::chrono::nanoseconds cooldown = std::chrono::seconds(1);
    };

    /// Creates the policy. Pre: `c.scale_up_depth > 0`, `0 < c.scale_down_ratio <= 1`.
    explicit depth_policy(config c) noexcept : config_(c) {}

    /// Returns the wanted worker count for this tick (see the class comment).
    std::size_t operator()(const scale_metrics& m) noexcept {
        const auto low = static_cast<double>(config_.scale_up_depth) * config_.scale_down_ratio;
        return gate_.step(
            m, m.queue_depth > config_.scale_up_depth, static_cast<double>(m.queue_depth) > low,
            std::max<std::size_t>(1, m.queue_depth / config_.scale_up_depth), config_.cooldown);
    }

private:
    config config_;
    detail::shrink_gate gate_;
};

/// A policy that scales on estimated queue wait instead of depth, which tracks latency better
/// when handlers vary in cost (ten slow requests can hurt more than a thousand quick ones).
///
/// - Grows when `queue_wait > target_wait`: by one worker, or by doubling the workers when the
///   wait exceeds twice the target.
/// - Shrinks by one worker per tick when the wait has stayed at or below
///   `scale_down_ratio * target_wait` for a whole `cooldown`, with an idle worker and no growth
///   within the last `cooldown`.
class wait_time_policy {
public:
    /// The thresholds.
    struct config {
        /// Estimated queue wait above which the policy grows (by one worker, or by doubling them
        /// past twice this wait). Must be > 0.
        std::chrono::nanoseconds target_wait = std::chrono::milliseconds(10);
        /// The low mark as a fraction of `target_wait`: the policy may shrink once the wait
        /// stays at or below `scale_down_ratio * target_wait`. In (0, 1].
        double scale_down_ratio = 0.5;
        /// How long the wait must stay at or below the low mark, and how long after the last
        /// growth the policy waits, before it sheds a worker.
        std::chrono::nanoseconds cooldown = std::chrono::seconds(1);
    };

    /// Creates the policy. Pre: `c.target_wait > 0`, `0 < c.scale_down_ratio <= 1`.
    explicit wait_time_policy(config c) noexcept : config_(c) {}

    /// Returns the wanted worker count for this tick (see the class comment).
    std::size_t operator()(const scale_metrics& m) noexcept {
        const auto low = std::chrono::duration<double, std::nano>(config_.target_wait) *
                         config_.scale_down_ratio;
        // Past twice the target (written so that it cannot overflow): double the workers.
        const bool far_behind = m.queue_wait - config_.target_wait > config_.target_wait;
        return gate_.step(m, m.queue_wait > config_.target_wait,
                          std::chrono::duration<double, std::nano>(m.queue_wait) > low,
                          far_behind ? std::max<std::size_t>(1, m.workers) : 1, config_.cooldown);
    }

private:
    config config_;
    detail::shrink_gate gate_;
};

}  // namespace workerpool
