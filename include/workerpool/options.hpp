#pragma once

/// @file
/// `options<Request, Result>`, a pool's configuration, and `job_options`, the per-request
/// overrides.

#include <workerpool/retry.hpp>
#include <workerpool/scaler.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace workerpool {

/// Per-request overrides, given to a submit call (or to `handler_map::on`, for every request of a
/// route). Zero fields mean "the route's, else the pool's default".
struct job_options {
    /// Deadline of each attempt, counted from the attempt's start; zero (or negative) =
    /// `options::default_timeout`.
    std::chrono::nanoseconds timeout{0};
    /// Total attempts allowed, the first included; zero = `options::retry.max_attempts`.
    unsigned max_attempts = 0;
    /// Absolute expiry: a request still queued (or waiting to retry) past it goes to `on_failure`
    /// with `failure_reason::expired` without running again. The epoch (default) means none.
    std::chrono::steady_clock::time_point deadline{};
    /// Requests with the same non-zero key run one at a time, in submit order: the next waits
    /// until this one has ended (completed or failed, its retries included), holding no worker
    /// and no ring slot. Keys with work are served in turn, so a key's backlog cannot starve
    /// another key. 0 (default): no key.
    std::uint64_t key = 0;
    /// The priority lane, in `[0, options::priority_lanes)`; a higher lane is served first. A
    /// larger value is served in the top lane.
    unsigned priority = 0;
    /// The request starts no earlier than this (it waits holding no worker). The epoch (default)
    /// means at once.
    std::chrono::steady_clock::time_point not_before{};
};

/// A token bucket: `per_second` starts a second on average, up to `burst` at once after a quiet
/// spell. `per_second == 0` (the default) means no limit.
struct rate_limit_settings {
    /// Tokens added per second: the long-run rate of attempts started. Finite, >= 0; 0 = off.
    double per_second = 0.0;
    /// How many tokens the bucket holds: the attempts that may start at once. >= 1 when on.
    std::size_t burst = 1;
};

/// Returns the default upper bound of workers: the hardware concurrency, or 4 if unknown.
[[nodiscard]] inline std::size_t default_max_workers() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 4 : static_cast<std::size_t>(n);
}

/// The ring count that `options::queue_shards = 0` picks, once, when the dispatcher is built (a
/// later `set_worker_limits` does not change it): `max_workers`, at most
/// `std::thread::hardware_concurrency()`, and at most `capacity / 64` (rings of fewer slots spill
/// into each other too often to pay off); never below 1. The measurements behind this default
/// are in docs/performance.md ("Measurements behind the code").
[[nodiscard]] inline std::size_t auto_queue_shards(std::size_t capacity,
                                                   std::size_t max_workers) noexcept {
    constexpr std::size_t min_ring_slots = 64;
    const auto hardware = static_cast<std::size_t>(std::thread::hardware_concurrency());
    std::size_t n = std::min(max_workers, capacity / min_ring_slots);
    if (hardware != 0) {
        n = std::min(n, hardware);
    }
    return std::max<std::size_t>(n, 1);
}

namespace detail {

/// What `on_success` is called with: the request, and the handler's result when there is one.
template <class Request, class Result>
struct success_callback {
    using type = std::function<void(Request&, const Result&)>;
};
template <class Request>
struct success_callback<Request, void> {
    using type = std::function<void(Request&)>;
};

}  // namespace detail

/// The configuration of a `dispatcher<Request, Result>` (`Result` only changes `on_success`).
/// Every field has a default that works as is; `dispatcher`'s constructor validates all of them
/// and throws `std::invalid_argument` naming the first bad field.
template <class Request, class Result = void>
struct options {
    /// Exact bound of the queue (requests waiting to start). Must be > 0.
    std::size_t capacity = 1024;
    /// Number of rings the queue is split into, their capacities adding up to `capacity`. Rings
    /// let many producers and workers claim slots on different cache lines: each submitting
    /// thread has a home ring (and spills to the others when it is full), each worker starts
    /// its search at its own. The price is order: requests start in submit order only within one
    /// ring. 1 is one FIFO ring: strict submit order. 0 (the default) picks
    /// `auto_queue_shards(capacity, max_workers)` at construction: one ring per worker, at most
    /// one per hardware thread and at least 64 slots per ring, so a pool built with one worker or
    /// a small capacity keeps one ring. Must be <= `capacity`.
    std::size_t queue_shards = 0;
    /// Workers kept even when idle; the pool starts with this many. Must be <= `max_workers`.
    std::size_t min_workers = 1;
    /// Upper bound of live workers (plus `stuck_allowance` replacements). Must be > 0.
    std::size_t max_workers = default_max_workers();
    /// Queue depth above which the default policy adds workers. Must be > 0.
    std::size_t scale_up_depth = 16;
    /// The default policy sheds workers once depth stays at or below
    /// `scale_down_ratio * scale_up_depth` for `scale_down_cooldown`. In (0, 1].
    double scale_down_ratio = 0.75;
    /// How long the load must stay low (and how long after a growth) before a shrink.
    std::chrono::nanoseconds scale_down_cooldown = std::chrono::seconds(1);
    /// Period of the scaler's tick while the pool has work, is above `min_workers`, or uses a
    /// policy of its own. A pool at rest (nothing queued or waiting to retry, at `min_workers`,
    /// a built-in policy) does not tick at all until work comes. Must be > 0.
    std::chrono::milliseconds scale_interval{50};
    /// A worker asleep for longer than this retires, down to `min_workers`. Must be > 0.
    std::chrono::nanoseconds idle_keep_alive = std::chrono::seconds(10);
    /// Deadline of each attempt unless the request sets its own; zero = none. Must be >= 0.
    std::chrono::nanoseconds default_timeout{0};
    /// How long past its deadline an attempt may run before its worker is declared stuck and
    /// stops counting as capacity. Must be >= 0.
    std::chrono::nanoseconds stuck_grace = std::chrono::milliseconds(100);
    /// How many replacement workers may run above `max_workers` while others are stuck.
    std::size_t stuck_allowance = 2;
    /// How long a worker that found the queue empty, or a blocked `submit` that found it full,
    /// keeps polling (pausing and yielding) before it sleeps. Trades a little CPU after a burst for
    /// much less wake-up cost. A blocked `submit` spends the first quarter of it, 10 us at most,
    /// waiting for a batch of free slots rather than one. Must be >= 0.
    std::chrono::nanoseconds spin_before_sleep = std::chrono::microseconds(50);
    /// One request in this many (per submitting thread) is timed for the latency figures in
    /// `stats()`: its queue wait and run time. Timing costs three clock reads, so sampling keeps
    /// it off the average request. 1 times every request; 0 disables.
    unsigned latency_sample_every = 32;
    /// The grace the destructor gives `shutdown()` when the user did not call it. Must be >= 0.
    std::chrono::nanoseconds destructor_grace = std::chrono::seconds(1);
    /// Attempts, backoff and which errors are retried.
    retry_policy retry{};
    /// Dead-letter sink: receives every request that will not be processed after all (its
    /// attempts exhausted, its deadline passed, or cancelled by shutdown or its handle). Called on
    /// a pool thread (a worker; the supervisor for a tracked request cancelled while it waited out
    /// a backoff or in the scheduler; the thread running `shutdown()` or the destructor for what
    /// they discard). Keep it short: while the supervisor runs it, timeouts, scaling and timed
    /// releases wait. If it throws, the exception is swallowed and counted in
    /// `stats().callback_errors`.
    /// Empty: such requests are destroyed (and still counted as failed).
    std::function<void(failure<Request>&&)> on_failure{};
    /// Observer of scale, retry, timeout, stuck, dead-letter and shutdown events. Called on pool
    /// threads (often under the pool's internal locks: keep it short, and never call back into
    /// the pool). Exceptions are swallowed and counted. Empty: no cost.
    std::function<void(const event&)> on_event{};
    /// Called with each request whose handler returned normally (late ones too), on the worker
    /// thread, right after the handler, with what the handler wrote into it. Lets callers collect
    /// results without wrapping every handler; it may move out of the request, which the pool
    /// destroys right after it returns. With a `Result` (`dispatcher<Request, Result>`), it is
    /// called as `on_success(request, result)`, before the result reaches the request's handle.
    /// Exceptions are swallowed and counted. Empty: no cost.
    typename detail::success_callback<Request, Result>::type on_success{};
    /// Called on each worker thread when it starts and before it exits, with the worker's id
    /// (per-thread set-up: a connection, a thread-local cache). Exceptions are swallowed and
    /// counted. Worker threads are named "workerpool-<id>" on Linux.
    std::function<void(std::size_t worker_id)> on_worker_start{};
    /// See `on_worker_start`.
    std::function<void(std::size_t worker_id)> on_worker_stop{};
    /// Scaling policy. Empty: `depth_policy` built from the fields above.
    scale_policy policy{};
    /// Priority lanes (`job_options::priority`), each holding up to `capacity` requests of its
    /// own, so that a full low lane never refuses a higher one. With more than one lane every
    /// request goes through the scheduler (a lock per submit and per start). In [1, 64].
    std::size_t priority_lanes = 1;
    /// A request ready for `k` times this long is served as if `k` lanes higher (up to the top
    /// lane; the older goes first between equals), so no lane starves. 0: no aging. Must be >= 0.
    std::chrono::nanoseconds priority_aging = std::chrono::seconds(1);
    /// A limit on the attempts the whole pool starts (retries included); over it, requests wait
    /// holding no worker. Off by default; when on, every request goes through the scheduler.
    rate_limit_settings rate_limit{};
    /// The same limit for each non-zero `job_options::key` on its own. Off by default.
    rate_limit_settings key_rate_limit{};
};

namespace detail {

/// The scaling policy `o` asks for: its own, or a `depth_policy` built from its fields.
template <class Request, class Result>
[[nodiscard]] scale_policy policy_of(const options<Request, Result>& o) {
    if (o.policy) {
        return o.policy;
    }
    return depth_policy({o.scale_up_depth, o.scale_down_ratio, o.scale_down_cooldown});
}

/// Whether `o`'s scaling policy is a built-in one (`depth_policy`, `wait_time_policy`), whose
/// answer cannot change while nothing is queued and no worker is above `min_workers`.
template <class Request, class Result>
[[nodiscard]] bool policy_rests(const options<Request, Result>& o) noexcept {
    return !o.policy || o.policy.template target<depth_policy>() != nullptr ||
           o.policy.template target<wait_time_policy>() != nullptr;
}

inline void require(bool ok, const char* field, const char* what) {
    if (!ok) {
        throw std::invalid_argument(std::string("workerpool: options.") + field + " " + what);
    }
}

inline void validate(const rate_limit_settings& r, const std::string& field) {
    require(std::isfinite(r.per_second) && r.per_second >= 0.0, (field + ".per_second").c_str(),
            "must be a finite number >= 0");
    require(r.per_second == 0.0 || r.burst >= 1, (field + ".burst").c_str(),
            "must be >= 1 when per_second > 0");
}

template <class Rep, class Period>
void require_non_negative(std::chrono::duration<Rep, Period> d, const char* field) {
    require(d.count() >= 0, field, "must not be negative");
}

/// Throws `std::invalid_argument` naming the first field of `o` that is out of range.
template <class Request, class Result>
void validate(const options<Request, Result>& o) {
    require(o.capacity > 0, "capacity", "must be > 0");
    require(o.queue_shards <= o.capacity, "queue_shards",
            "must be <= options.capacity (every ring needs a slot)");
    require(o.max_workers > 0, "max_workers", "must be > 0");
    require(o.min_workers <= o.max_workers, "min_workers", "must be <= options.max_workers");
    require(o.scale_up_depth > 0, "scale_up_depth", "must be > 0");
    require(o.scale_down_ratio > 0.0 && o.scale_down_ratio <= 1.0, "scale_down_ratio",
            "must be in (0, 1]");
    require_non_negative(o.scale_down_cooldown, "scale_down_cooldown");
    require(o.scale_interval.count() > 0, "scale_interval", "must be > 0");
    require(o.idle_keep_alive.count() > 0, "idle_keep_alive", "must be > 0");
    require_non_negative(o.default_timeout, "default_timeout");
    require_non_negative(o.stuck_grace, "stuck_grace");
    require_non_negative(o.spin_before_sleep, "spin_before_sleep");
    require_non_negative(o.destructor_grace, "destructor_grace");
    validate(o.retry, "workerpool: options.retry.");
    require(o.priority_lanes >= 1 && o.priority_lanes <= 64, "priority_lanes",
            "must be in [1, 64]");
    require_non_negative(o.priority_aging, "priority_aging");
    validate(o.rate_limit, "rate_limit");
    validate(o.key_rate_limit, "key_rate_limit");
}

}  // namespace detail

}  // namespace workerpool
