#pragma once

/// @file
/// What a pool reports about itself: `stats_snapshot` (from `stats()`) and `event` (passed to
/// `options::on_event`).

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace workerpool {

/// Percentiles of a duration over a recent window of sampled requests. Each figure is the upper
/// edge of a log-linear bucket, so it over-states the true value by at most 12.5 %.
struct latency_summary {
    std::chrono::nanoseconds p50{0};  ///< Median.
    std::chrono::nanoseconds p90{0};  ///< 90th percentile.
    std::chrono::nanoseconds p99{0};  ///< 99th percentile.
    std::chrono::nanoseconds max{0};  ///< Largest sample in the window.
    std::uint64_t samples = 0;        ///< How many requests the window holds (0: no data).
};

/// A snapshot of a pool's counters and gauges, read without stopping the pool.
///
/// Counters are monotonic totals since construction. Each field is read on its own, so fields
/// taken together may be off by the few requests that moved while the snapshot was taken; after
/// `shutdown()` has returned (and no stuck handler is still running) they are exact.
/// Accounting identity, once quiet: `submitted == completed + failed + unprocessed` where
/// `unprocessed` is what the shutdown report handed back.
struct stats_snapshot {
    std::uint64_t submitted = 0;  ///< Requests accepted by a submit call.
    std::uint64_t rejected = 0;   ///< Submit calls refused with `full`.
    std::uint64_t completed = 0;  ///< Requests whose handler returned normally (late ones too).
    std::uint64_t failed = 0;     ///< Requests handed to `on_failure` (all reasons).
    std::uint64_t retried = 0;    ///< Attempts after the first.
    std::uint64_t timed_out = 0;  ///< Attempts that threw after their deadline stopped them.
    std::uint64_t late = 0;       ///< Attempts that returned normally after their deadline.
    /// Requests ended as cancelled by a worker (an attempt that threw after shutdown stopped it,
    /// and a tracked request its handle or group cancelled) or by the supervisor (a tracked
    /// request cancelled while it waited out a backoff or in the scheduler); also counted in
    /// `failed`.
    std::uint64_t cancelled = 0;
    std::uint64_t expired = 0;  ///< Requests dropped to `on_failure` past their deadline.
    /// Exceptions thrown by the user's callbacks (`on_failure`, `on_event`, `on_success`,
    /// `on_worker_start`, `on_worker_stop`, `retry.retry_if`, the scaling `policy`), swallowed.
    std::uint64_t callback_errors = 0;
    std::size_t queue_depth = 0;    ///< Requests waiting in the queue (approximate).
    std::size_t capacity = 0;       ///< The queue's exact bound.
    std::size_t retry_pending = 0;  ///< Requests waiting out a retry backoff.
    /// Requests the scheduler holds (not yet started): behind their key, in a priority lane,
    /// before their `not_before`, or waiting for a rate-limit token.
    std::size_t scheduled = 0;
    /// Times a request had to wait for a rate-limit token (`options::rate_limit`,
    /// `options::key_rate_limit`).
    std::uint64_t throttled = 0;
    std::size_t workers = 0;        ///< Live workers, as `worker_count()`.
    std::size_t in_flight = 0;      ///< Workers running a handler right now.
    std::size_t idle = 0;           ///< Workers asleep waiting for work.
    std::size_t stuck = 0;          ///< Workers whose handler overran deadline + stuck grace.
    std::size_t peak_workers = 0;   ///< Highest `workers` ever seen.
    std::uint64_t scale_ups = 0;    ///< Workers added (by the scaler or `add_worker`).
    std::uint64_t scale_downs = 0;  ///< Workers retired (scaler, keep-alive, `remove_worker`).
    std::uint64_t stuck_total = 0;  ///< Times a worker was declared stuck.
    /// Times the supervisor thread woke up: for a scaling tick (every `scale_interval`), a
    /// deadline to stamp or enforce, a retry falling due, or a kick (a worker exiting, a submit
    /// to a pool without workers). It never wakes without one of these causes; see
    /// docs/guarantees.md for the bound.
    std::uint64_t supervisor_wakeups = 0;
    /// Time sampled requests waited in the queue, from submit (or retry due time) to the start of
    /// their attempt; over the last 5 to 10 seconds. See `options::latency_sample_every`.
    latency_summary queue_wait;
    /// Run time of sampled attempts (handler call), over the same window.
    latency_summary run_time;
};

/// What an `event` reports.
enum class event_kind {
    scale_up,             ///< Workers were added; `workers_before` → `workers_after`.
    scale_down,           ///< Workers were retired; `workers_before` → `workers_after`.
    retry_scheduled,      ///< A failed attempt will be retried after a backoff.
    attempt_timed_out,    ///< An attempt's deadline passed and its token was stopped.
    worker_stuck,         ///< A handler overran its deadline + stuck grace; capacity is replaced.
    worker_recovered,     ///< A stuck handler finally returned.
    dead_letter,          ///< A request was handed to `on_failure`.
    shutdown_begin,       ///< `shutdown()` closed intake and started draining.
    shutdown_grace_over,  ///< The drain grace ran out with requests still queued or running:
                          ///< running attempts are cancelled, queued ones handed back.
    shutdown_done,        ///< Shutdown finished; the report is ready.
    throttled,            ///< A request waits for a rate-limit token (reason: whose limit).
    paused,               ///< `pause()`: no request starts until `resume()`.
    resumed,              ///< `resume()`: requests start again.
};

/// Returns a short, stable English name for `k` ("scale_up", ...).
constexpr const char* to_string(event_kind k) noexcept {
    switch (k) {
    case event_kind::scale_up:
        return "scale_up";
    case event_kind::scale_down:
        return "scale_down";
    case event_kind::retry_scheduled:
        return "retry_scheduled";
    case event_kind::attempt_timed_out:
        return "attempt_timed_out";
    case event_kind::worker_stuck:
        return "worker_stuck";
    case event_kind::worker_recovered:
        return "worker_recovered";
    case event_kind::dead_letter:
        return "dead_letter";
    case event_kind::shutdown_begin:
        return "shutdown_begin";
    case event_kind::shutdown_grace_over:
        return "shutdown_grace_over";
    case event_kind::shutdown_done:
        return "shutdown_done";
    case event_kind::throttled:
        return "throttled";
    case event_kind::paused:
        return "paused";
    case event_kind::resumed:
        return "resumed";
    }
    return "unknown";
}

/// One thing that happened in a pool, passed to `options::on_event`.
/// `reason` points to a string literal (static storage); it is never null.
struct event {
    event_kind kind{};                           ///< What happened.
    std::chrono::steady_clock::time_point when;  ///< When it was noticed.
    std::size_t workers_before = 0;              ///< Live workers before (scale events).
    std::size_t workers_after = 0;               ///< Live workers after (scale events).
    std::size_t queue_depth = 0;                 ///< Queue depth when it happened.
    unsigned attempts = 0;                       ///< Attempts so far (retry, timeout, dead letter).
    const char* reason = "";                     ///< A short explanation ("backlog", "idle", ...).
};

}  // namespace workerpool
