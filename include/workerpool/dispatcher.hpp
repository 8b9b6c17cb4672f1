#pragma once

/// @file
/// `dispatcher<Request>`, the worker pool itself, with the `shutdown_report` it hands back and the
/// `request_handler` concept its handlers satisfy.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/histogram.hpp>
#include <workerpool/detail/null_callable.hpp>
#include <workerpool/detail/route_options.hpp>
#include <workerpool/detail/sharded_queue.hpp>
#include <workerpool/detail/usage_checks.hpp>
#include <workerpool/options.hpp>
#include <workerpool/retry.hpp>
#include <workerpool/scaler.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace workerpool {

/// What `dispatcher::shutdown` hands back.
template <class Request>
struct shutdown_report {
    /// Every request that was accepted but never finished: still queued when the drain ended,
    /// waiting out a retry backoff, or whose attempt failed on its own during shutdown with
    /// attempts left. An attempt that throws after shutdown stopped its token is not here: it
    /// goes to `on_failure` as `cancelled`, attempts left or not. So a caller who wants to keep
    /// unfinished work collects both. Moved out of the pool; the caller owns them.
    std::vector<Request> unprocessed;
    /// True if the queue emptied and every running handler returned within the grace, so that no
    /// attempt was cancelled. Requests waiting out a retry backoff are handed back at once and do
    /// not make it false: `unprocessed` may be non-empty when `drained` is true.
    bool drained = false;
    /// Workers whose handler ignored its stopped token and was still running when shutdown
    /// returned. The destructor waits for them (it never detaches a thread).
    std::size_t stuck_workers = 0;
    /// True when called from one of the pool's own handlers: intake is closed, and the rest of the
    /// shutdown is left to a later call from another thread or to the destructor.
    bool deferred = false;
};

/// True when `H` can serve as a handler for `Request`: callable as `h(Request&, std::stop_token)`
/// or as `h(Request&)`, and not visibly taking the request by value (a function pointer, or a
/// class with one non-template `operator()`, whose first parameter is `Request`): a handler works
/// on the pool's request, so that what it writes into it stays for the retries and `on_success`.
template <class H, class Request>
concept request_handler =
    (std::is_invocable_v<H&, Request&, std::stop_token> ||
     std::is_invocable_v<H&, Request&>)&&!detail::takes_request_by_value<H, Request>;

namespace detail {

/// Nanoseconds on the steady clock; the currency of every deadline in the pool.
[[nodiscard]] inline std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// Returns `a + b` for `b >= 0`, or the largest value where that would overflow ("never").
[[nodiscard]] constexpr std::int64_t add_saturated(std::int64_t a, std::int64_t b) noexcept {
    return b > std::numeric_limits<std::int64_t>::max() - a
               ? std::numeric_limits<std::int64_t>::max()
               : a + b;
}

/// Returns when a wait of `d` that starts now ends, or nothing if it is too long to represent
/// (a century or more: as good as for ever). Never overflows, whatever the duration's type.
template <class Rep, class Period>
[[nodiscard]] std::optional<std::chrono::steady_clock::time_point>
end_of_wait(std::chrono::duration<Rep, Period> d) noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (d <= std::chrono::duration<Rep, Period>::zero()) {
        return now;
    }
    constexpr auto century = std::chrono::hours(24 * 365 * 100);
    if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(century)) {
        return std::nullopt;
    }
    return now + std::chrono::ceil<std::chrono::steady_clock::duration>(d);
}

[[nodiscard]] inline std::chrono::steady_clock::time_point to_time_point(std::int64_t ns) noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::nanoseconds(ns)));
}

/// The pool whose worker is running on this thread, if any (for self-call detection).
inline thread_local const void* current_pool = nullptr;

/// Counts down this thread's submits to the next one that is timed for latency statistics.
inline thread_local unsigned latency_countdown = 1;

/// A request with the bookkeeping that travels with it through the queue and the retry delay
/// queue. Stored in place in the ring: no allocation per request.
template <class Request>
struct envelope {
    Request request;
    std::int64_t timeout_ns;        // per-attempt timeout; 0 = none
    std::int64_t expires_ns;        // absolute expiry; 0 = none
    unsigned max_attempts;          // total attempts allowed
    unsigned attempts = 0;          // attempts made so far
    std::exception_ptr last_error;  // the last attempt's exception, for the dead-letter record
    std::int64_t enqueued_ns;       // when it became runnable, if sampled for latency; else 0

    envelope(Request&& r, std::int64_t timeout, std::int64_t expires, unsigned max,
             std::int64_t enqueued) noexcept
        : request(std::move(r)), timeout_ns(timeout), expires_ns(expires), max_attempts(max),
          enqueued_ns(enqueued) {}
};

/// A type-erased handler: one indirect call per request, one allocation per pool.
template <class Request>
class erased_handler {
public:
    template <class H>
    explicit erased_handler(H h)
        : object_(new H(std::move(h)), [](void* p) noexcept { delete static_cast<H*>(p); }),
          call_([](void* p, Request& r, const std::stop_token& st) {
              if constexpr (std::is_invocable_v<H&, Request&, std::stop_token>) {
                  (*static_cast<H*>(p))(r, st);
              } else {
                  (*static_cast<H*>(p))(r);
              }
          }) {}

    void operator()(Request& r, const std::stop_token& st) const { call_(object_.get(), r, st); }

    // The handler object, for route_options_source (which knows its type).
    [[nodiscard]] const void* target() const noexcept { return object_.get(); }

private:
    std::unique_ptr<void, void (*)(void*) noexcept> object_;
    void (*call_)(void*, Request&, const std::stop_token&);
};

// Values of worker_slot::attempt besides deadlines (deadlines are steady-clock ns, far below).
inline constexpr std::uint64_t attempt_none = 0;  // no attempt in flight
// A timed attempt whose deadline the supervisor has not stamped yet; the low 32 bits carry the
// worker's attempt number so that a stamp meant for one attempt can never land on the next.
inline constexpr std::uint64_t attempt_unstamped = std::uint64_t{1} << 62;
inline constexpr std::uint64_t attempt_unbounded = std::numeric_limits<std::uint64_t>::max() - 2;
inline constexpr std::uint64_t attempt_stopping = std::numeric_limits<std::uint64_t>::max() - 1;
inline constexpr std::uint64_t attempt_stopped = std::numeric_limits<std::uint64_t>::max();

[[nodiscard]] constexpr bool is_deadline(std::uint64_t s) noexcept {
    return s != attempt_none && s < attempt_unstamped;
}
[[nodiscard]] constexpr bool is_unstamped(std::uint64_t s) noexcept {
    return s >= attempt_unstamped && s < attempt_unstamped + (std::uint64_t{1} << 32);
}

/// How soon after it starts a timed attempt must get its deadline stamped: 5 % of its timeout,
/// within [1 ms, scale interval]. This bounds how late a deadline can fire.
[[nodiscard]] inline std::int64_t stamp_period(std::int64_t timeout_ns,
                                               std::int64_t interval_ns) noexcept {
    return std::clamp<std::int64_t>(timeout_ns / 20, 1'000'000,
                                    std::max<std::int64_t>(interval_ns, 1'000'000));
}

enum class stop_cause : std::uint8_t { none, deadline, shutdown };

/// A counter with a single writer: plain load + store, no locked instruction on the hot path.
struct owned_counter {
    std::atomic<std::uint64_t> value{0};
    void bump() noexcept {
        // release: [C1] publishes the request's outcome (the handler's effects) to wait_idle's
        // acquire read [C2]; a plain store on x86. Only the owning worker writes.
        value.store(value.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    [[nodiscard]] std::uint64_t get() const noexcept {
        return value.load(std::memory_order_relaxed);  // statistics only
    }
    [[nodiscard]] std::uint64_t get_acquire() const noexcept {
        return value.load(std::memory_order_acquire);  // [C2] pairs with [C1]
    }
};

}  // namespace detail

/// A bounded, self-scaling pool of worker threads that runs a handler on each submitted `Request`
/// under a per-attempt timeout with retries, and never loses an accepted request.
///
/// Lifecycle: construct (starts `min_workers` workers and the supervisor thread) → submit from
/// any threads → `shutdown(grace)` (closes intake, drains until the grace is over, then stops
/// the tokens of running handlers, joins, and hands back every request it did not process) →
/// destroy. The destructor runs `shutdown(options.destructor_grace)` if nobody did, passes what it
/// could not process to `on_failure` as `cancelled` with 0 attempts, and then joins every thread,
/// waiting for a stuck handler if it must: it never detaches a thread that touches the pool.
///
/// Threads: the queue is one or more fixed rings (`bounded_queue`, see `options.queue_shards`);
/// each worker is a `std::jthread` with its own stop state; one supervisor `std::jthread` scales
/// the workers, stops attempts whose deadline passed, spots stuck workers, and re-enqueues retries
/// when their backoff is over.
///
/// Accounting: every accepted request ends exactly once — completed (its handler returned),
/// failed (handed to `on_failure`), or returned in `shutdown_report::unprocessed`.
template <class Request>
class dispatcher {
    static_assert(std::is_object_v<Request> && !std::is_const_v<Request>,
                  "dispatcher<Request>: Request must be a non-const object type");
    // The destructor first: a throwing destructor also makes the move check false (GCC counts the
    // temporary's destruction), and Clang stops at the first failed assertion.
    static_assert(std::is_nothrow_destructible_v<Request>,
                  "dispatcher<Request>: Request's destructor must not throw");
    static_assert(!std::is_nothrow_destructible_v<Request> ||
                      std::is_nothrow_move_constructible_v<Request>,
                  "dispatcher<Request>: Request must be nothrow move-constructible (a request "
                  "moves into the queue and out of it, and neither move may fail); give it a "
                  "noexcept move constructor, or submit a std::unique_ptr<Request>");

    using envelope = detail::envelope<Request>;
    using clock = std::chrono::steady_clock;

public:
    /// The request type.
    using request_type = Request;

    /// Starts a pool of `o.min_workers` workers running `handler`.
    /// `handler` is called as `handler(Request&, std::stop_token)` (or `handler(Request&)`), on
    /// worker threads, concurrently; it signals failure by throwing. The token is stopped when the
    /// attempt's deadline passes or shutdown cancels it.
    /// Throws: `std::invalid_argument` naming the bad field of `o`, or when `handler` is null (an
    /// empty `std::function`, a null function pointer); `std::system_error` if a thread cannot be
    /// started; `std::bad_alloc`.
    template <class Handler>
    explicit dispatcher(Handler handler, options<Request> o = {})
        : options_((detail::validate(o), std::move(o))),
          handler_(check_handler(std::move(handler))),
          route_options_(detail::route_options_source<Request>::of(
              static_cast<const std::decay_t<Handler>*>(handler_.target()))),
          queue_(options_.capacity,
                 options_.queue_shards != 0
                     ? options_.queue_shards
                     : auto_queue_shards(options_.capacity, options_.max_workers)),
          covered_timeout_ns_(options_.default_timeout.count() > 0
                                  ? options_.default_timeout.count()
                                  : std::numeric_limits<std::int64_t>::max()),
          awake_period_ns_(
              options_.default_timeout.count() > 0
                  ? detail::stamp_period(options_.default_timeout.count(),
                                         std::chrono::nanoseconds(options_.scale_interval).count())
                  : 0),
          min_workers_(options_.min_workers), max_workers_(options_.max_workers),
          rng_seed_(std::random_device{}()) {
        if (options_.policy) {
            policy_ = options_.policy;
        } else {
            policy_ = depth_policy(
                {options_.scale_up_depth, options_.scale_down_ratio, options_.scale_down_cooldown});
        }
        workers_.reserve(options_.max_workers + options_.stuck_allowance);
        idle_stack_.reserve(options_.max_workers + options_.stuck_allowance);
        try {
            std::lock_guard lock(workers_mutex_);
            for (std::size_t i = 0; i < options_.min_workers; ++i) {
                spawn_worker_locked(/*count_as_scale_up=*/false);
            }
            supervisor_ = std::jthread([this](std::stop_token st) { supervise(st); });
        } catch (...) {
            abandon_construction();
            throw;
        }
    }

    /// Not copyable: a pool owns its threads and its queue.
    dispatcher(const dispatcher&) = delete;
    /// Not copy-assignable.
    dispatcher& operator=(const dispatcher&) = delete;
    /// Not movable: the pool's threads refer to it by address.
    dispatcher(dispatcher&&) = delete;
    /// Not move-assignable.
    dispatcher& operator=(dispatcher&&) = delete;

    /// Shuts down with `options.destructor_grace` if `shutdown()` was not called, hands what it
    /// could not process to `on_failure` (reason `cancelled`, 0 attempts if it never ran), and
    /// joins every thread. Blocks while a stuck handler runs; never terminates, never detaches.
    /// Producers blocked in `submit` / `submit_for` when it begins return `closed` (their requests
    /// untouched), and it waits for them to leave the call before any member is destroyed.
    /// Pre: not called from one of this pool's handlers; no other call on this pool starts, or is
    /// in progress other than a submit waiting for a slot (that is a use of a destroyed object).
    ~dispatcher() {
        std::vector<envelope> left;
        try {
            (void)shutdown_into(options_.destructor_grace, left);
        } catch (...) {
            // Out of memory while collecting: what was collected is still dead-lettered below.
        }
        // Producers that were blocked in submit woke with `closed`; they must have left the call
        // before their mutex, condition variable and queue are destroyed.
        wait_for_submitters_to_leave();
        for (envelope& e : left) {
            dead_letter_unowned(std::move(e.request), e.attempts, e.last_error);
        }
        join_all_workers();
        std::vector<envelope> late;
        {
            std::lock_guard lock(retry_mutex_);
            late.swap(handed_back_);
        }
        for (envelope& e : late) {
            dead_letter_unowned(std::move(e.request), e.attempts, e.last_error);
        }
    }

    /// Enqueues `r` without blocking.
    /// Returns `accepted` (and moves from `r`), `full`, or `closed`; on refusal `r` is untouched.
    /// A zero (or negative) `jo.timeout`, a zero `jo.max_attempts` or an epoch `jo.deadline` means
    /// the option of `r`'s route (`handler_map::on`), and where that is zero too, the pool's.
    /// Thread safety: any thread, including a handler of this pool. Never blocks; never allocates
    /// (with route options, unless taking a request's key allocates).
    [[nodiscard]] submit_status try_submit(Request&& r, job_options jo = {}) noexcept {
        route_options_.apply(r, jo);
        const submit_status s =
            queue_.try_emplace(std::move(r), resolve_timeout(jo), resolve_expiry(jo),
                               resolve_attempts(jo), sample_enqueue_time());
        if (s == submit_status::accepted) {
            after_push();
        } else if (s == submit_status::full) {
            rejected_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        }
        return s;
    }

    /// Enqueues `r`, blocking while the queue is full (back-pressure).
    /// Returns `accepted` (and moves from `r`) or `closed` (shutdown began, maybe while waiting;
    /// `r` is untouched). Called from a handler of this same pool it does not block: it returns
    /// `full` instead of waiting for a slot that only its own pool could free. `jo` as in
    /// `try_submit`.
    /// Thread safety: any thread. Blocks: while the queue is full.
    [[nodiscard]] submit_status submit(Request&& r, job_options jo = {}) noexcept {
        return submit_until(r, jo, std::nullopt);
    }

    /// Enqueues `r`, blocking up to `timeout` while the queue is full.
    /// Returns `accepted` (moves from `r`), `full` when the time ran out, or `closed`; on refusal
    /// `r` is untouched. From a handler of this pool it does not block (see `submit`).
    /// Thread safety: any thread. Blocks: up to `timeout`.
    template <class Rep, class Period>
    [[nodiscard]] submit_status submit_for(Request&& r, std::chrono::duration<Rep, Period> timeout,
                                           job_options jo = {}) noexcept {
        return submit_until(r, jo, detail::end_of_wait(timeout));
    }

    /// Not callable with a `Request` lvalue: fails to compile with a message that says to pass
    /// `std::move(request)` (a submit moves from the request only when it returns `accepted`).
    template <class R>
    requires detail::request_lvalue<R, Request> submit_status try_submit(R&& /*request*/,
                                                                         job_options /*jo*/ = {})
    noexcept { return detail::lvalue_submit<R>::refuse(); }

    /// Not callable with a `Request` lvalue; see `try_submit`.
    template <class R>
    requires detail::request_lvalue<R, Request> submit_status submit(R&& /*request*/,
                                                                     job_options /*jo*/ = {})
    noexcept { return detail::lvalue_submit<R>::refuse(); }

    /// Not callable with a `Request` lvalue; see `try_submit`.
    template <class R, class Rep, class Period>
    requires detail::request_lvalue<R, Request>
        submit_status submit_for(R&& /*request*/, std::chrono::duration<Rep, Period> /*timeout*/,
                                 job_options /*jo*/ = {})
    noexcept { return detail::lvalue_submit<R>::refuse(); }

    /// Stops intake, drains the queue for up to `grace`, then stops the token of every running
    /// handler, joins the workers, and returns every request it did not process.
    ///
    /// Step by step: later submits return `closed` and blocked submitters wake with `closed`;
    /// requests waiting out a retry backoff are handed back at once; workers keep running queued
    /// requests until the queue is empty or `grace` is over; then each running attempt's token is
    /// stopped (a handler that then throws reaches `on_failure` as `cancelled`), cooperative
    /// handlers are waited for up to `options.stuck_grace`, the queue's remainder is moved into
    /// the report, and the supervisor is joined. Handlers that ignore their token are counted in
    /// `stuck_workers`; their threads are joined by the destructor.
    ///
    /// Idempotent: a second call returns at once with an empty report. Called from one of this
    /// pool's own handlers it only closes intake and returns a report with `deferred == true`.
    /// Thread safety: any thread; concurrent calls serialise. Blocks: up to about
    /// `grace + stuck_grace`.
    shutdown_report<Request> shutdown(std::chrono::nanoseconds grace) {
        std::vector<envelope> left;
        shutdown_report<Request> report = shutdown_into(grace, left);
        report.unprocessed.reserve(left.size());
        for (envelope& e : left) {
            report.unprocessed.push_back(std::move(e.request));
        }
        return report;
    }

    /// Returns a snapshot of the counters and gauges (see `stats_snapshot`).
    /// Thread safety: any thread, also during shutdown; takes a short internal lock.
    [[nodiscard]] stats_snapshot stats() const {
        stats_snapshot s;
        {
            std::lock_guard lock(workers_mutex_);
            s.completed = retired_.completed;
            s.failed = retired_.failed;
            s.retried = retired_.retried;
            s.timed_out = retired_.timed_out;
            s.late = retired_.late;
            s.cancelled = retired_.cancelled;
            s.expired = retired_.expired;
            for (const auto& w : workers_) {
                s.completed += w->completed.get();
                s.failed += w->failed.get();
                s.retried += w->retried.get();
                s.timed_out += w->timed_out.get();
                s.late += w->late.get();
                s.cancelled += w->cancelled.get();
                s.expired += w->expired.get();
                // relaxed: a racy gauge
                if (w->attempt.load(std::memory_order_relaxed) != detail::attempt_none) {
                    ++s.in_flight;
                }
            }
            s.workers = worker_count_.load(std::memory_order_relaxed);
            s.stuck = stuck_count_;
            s.peak_workers = peak_workers_;
            s.scale_ups = scale_ups_;
            s.scale_downs = scale_downs_;
            s.stuck_total = stuck_total_;
            detail::histogram_counts wait, run;
            merge_latency_locked(wait, run);
            s.queue_wait = wait.since(window_base_wait_).summary();
            s.run_time = run.since(window_base_run_).summary();
        }
        // Counters kept outside the worker slots; all relaxed: statistics only.
        s.failed += pool_failed_.load(std::memory_order_relaxed);
        {
            // Retries are re-enqueued under retry_mutex_, so this pair never counts one as a
            // new submission: `submitted` never goes back.
            std::lock_guard lock(retry_mutex_);
            s.submitted = queue_.pushed_count() - requeued_.load(std::memory_order_relaxed);
        }
        s.rejected = rejected_.load(std::memory_order_relaxed);
        s.callback_errors = callback_errors_.load(std::memory_order_relaxed);
        s.queue_depth = queue_.approx_size();
        s.capacity = queue_.capacity();
        s.retry_pending = retry_pending_.load(std::memory_order_relaxed);
        s.idle = idle_count_.load(std::memory_order_relaxed);
        return s;
    }

    /// Returns the number of live workers (not retiring; stuck ones and their replacements
    /// included). Exact right after `add_worker`, `remove_worker` or `set_worker_limits` return on
    /// the calling thread. Thread safety: any thread.
    [[nodiscard]] std::size_t worker_count() const noexcept {
        return worker_count_.load(
            std::memory_order_relaxed);  // a gauge; writers hold workers_mutex_
    }

    /// Starts one more worker if the pool is below `max_workers`; returns whether it did.
    /// Thread safety: any thread. Never throws: a thread that cannot start returns false.
    bool add_worker() noexcept {
        std::optional<event> added;  // no allocation once the worker runs
        {
            std::lock_guard lock(workers_mutex_);
            if (!closing_.load(std::memory_order_relaxed) && capacity_locked() < max_workers_ &&
                below_thread_limit_locked()) {
                const std::size_t before = worker_count_.load(std::memory_order_relaxed);
                if (try_spawn_locked(true)) {
                    added = make_event(event_kind::scale_up, "add_worker", before);
                }
            }
        }
        if (!added) {
            return false;
        }
        if (options_.on_event) {
            deliver(*added);
        }
        note_worker_awake();  // a new worker is awake
        return true;
    }

    /// Retires one worker if the pool is above `min_workers`; returns whether it did. An idle
    /// worker is retired first; a busy one finishes its current request before it exits.
    /// Thread safety: any thread.
    bool remove_worker() {
        std::vector<event> events;
        bool removed = false;
        {
            std::lock_guard lock(workers_mutex_);
            if (capacity_locked() > min_workers_) {
                const std::size_t before = worker_count_.load(std::memory_order_relaxed);
                removed = retire_one_locked();
                if (removed) {
                    events.push_back(make_event(event_kind::scale_down, "remove_worker", before));
                }
            }
        }
        emit_all(events);
        return removed;
    }

    /// Changes the worker limits at run time and moves the worker count into them at once.
    /// Throws: `std::invalid_argument` if `max_workers == 0` or `min_workers > max_workers`
    /// (the limits are then unchanged). Thread safety: any thread.
    void set_worker_limits(std::size_t min_workers, std::size_t max_workers) {
        detail::require(max_workers > 0, "max_workers", "must be > 0");
        detail::require(min_workers <= max_workers, "min_workers",
                        "must be <= options.max_workers");
        std::vector<event> events;
        {
            std::lock_guard lock(workers_mutex_);
            min_workers_ = min_workers;
            max_workers_ = max_workers;
            const std::size_t before = worker_count_.load(std::memory_order_relaxed);
            if (!closing_.load(std::memory_order_relaxed)) {
                while (capacity_locked() < min_workers_ && below_thread_limit_locked() &&
                       try_spawn_locked(true)) {
                }
            }
            while (capacity_locked() > max_workers_ && retire_one_locked()) {
            }
            const std::size_t after = worker_count_.load(std::memory_order_relaxed);
            if (after != before) {
                events.push_back(
                    make_event(after > before ? event_kind::scale_up : event_kind::scale_down,
                               "set_worker_limits", before));
            }
        }
        emit_all(events);
        note_worker_awake();  // workers may have started
    }

    /// Blocks until every request submitted before the call has ended — completed, failed, or
    /// handed back by a shutdown — so the queue is empty, no handler runs and no retry waits.
    /// Does not stop intake: requests submitted meanwhile by other threads may keep it waiting.
    /// After it returns, the effects of those requests' handlers are visible to the caller.
    /// Thread safety: any thread but a handler of this pool (which would wait for itself).
    /// Blocks: until idle.
    void wait_idle() { (void)wait_idle_until(std::nullopt); }

    /// As `wait_idle()`, for at most `timeout`; returns whether the pool became idle.
    template <class Rep, class Period>
    bool wait_idle_for(std::chrono::duration<Rep, Period> timeout) {
        return wait_idle_until(detail::end_of_wait(timeout));
    }

    /// Returns the queue's exact capacity.
    [[nodiscard]] std::size_t capacity() const noexcept { return queue_.capacity(); }

    /// Returns the number of rings the queue is split into (`options.queue_shards`, or what 0
    /// picked). 1 means strict FIFO order.
    [[nodiscard]] std::size_t queue_shards() const noexcept { return queue_.shard_count(); }

private:
    // ---------------------------------------------------------------- shutdown

    // The whole shutdown; what it did not process goes to `left` with its attempt history (the
    // destructor dead-letters it with that history; shutdown() hands back the bare requests).
    shutdown_report<Request> shutdown_into(std::chrono::nanoseconds grace,
                                           std::vector<envelope>& left) {
        shutdown_report<Request> report;
        if (detail::current_pool == this) {
            close_intake();
            report.deferred = true;
            return report;
        }
        std::lock_guard shutdown_lock(shutdown_mutex_);
        if (shut_down_) {
            return report;
        }
        const std::int64_t grace_end =
            detail::add_saturated(detail::now_ns(), std::max<std::int64_t>(0, grace.count()));
        emit(event_kind::shutdown_begin, "shutdown");
        close_intake();
        {
            std::lock_guard lock(retry_mutex_);
            retry_closed_ = true;
            left.reserve(retry_queue_.size() + queue_.capacity());
            for (auto& [due, e] : retry_queue_) {
                left.push_back(std::move(e));
            }
            retry_queue_.clear();
            retry_pending_.store(0, std::memory_order_relaxed);  // statistics only
        }
        draining_.store(true,
                        std::memory_order_seq_cst);  // seq_cst: read by sleepers' re-check [W1]
        wake_all_idle();
        {
            std::lock_guard lock(workers_mutex_);
            if (worker_count_.load(std::memory_order_relaxed) == 0 &&
                queue_.has_claimed_elements()) {
                try_spawn_locked(false);  // someone must drain a pool with min_workers == 0
            }
        }
        note_worker_awake();
        report.drained = wait_threads_exit_until(grace_end);
        if (!report.drained) {
            emit(event_kind::shutdown_grace_over, "grace over");
            cancel_.store(true,
                          std::memory_order_seq_cst);  // seq_cst: read by sleepers' re-check [W1]
            wake_all_idle();
            const std::int64_t cancel_end =
                detail::now_ns() +
                std::max<std::int64_t>(
                    options_.stuck_grace.count(),
                    std::chrono::nanoseconds(std::chrono::milliseconds(10)).count());
            for (;;) {
                stop_all_attempts();
                const std::int64_t step = std::min(cancel_end, detail::now_ns() + 1'000'000);
                if (wait_threads_exit_until(step) || detail::now_ns() >= cancel_end) {
                    break;
                }
            }
            // A handler that returned after its last pass may still have been stopped late; one
            // more pass leaves no unstopped attempt behind.
            stop_all_attempts();
        }
        supervisor_.request_stop();
        kick_supervisor();
        if (supervisor_.joinable()) {
            supervisor_.join();
        }
        {
            std::lock_guard lock(workers_mutex_);
            reap_exited_locked();
            report.stuck_workers = workers_.size();
        }
        drain_queue_into(left);
        {
            std::lock_guard lock(retry_mutex_);
            for (envelope& e : handed_back_) {
                left.push_back(std::move(e));
            }
            handed_back_.clear();
        }
        returned_.fetch_add(left.size(), std::memory_order_release);  // pairs with outstanding()
        shut_down_ = true;
        notify_idle_waiters();
        emit(event_kind::shutdown_done, "shutdown");
        return report;
    }

    // ---------------------------------------------------------------- idle waiting

    // Requests accepted and not yet ended; never under-estimates. Reads the ended counts first
    // and the accepted count last, so a request that ends meanwhile can only make it larger.
    [[nodiscard]] std::uint64_t outstanding() const {
        std::uint64_t ended =
            returned_.load(std::memory_order_acquire);  // pairs with shutdown's release
        {
            std::lock_guard lock(workers_mutex_);
            ended += retired_.completed + retired_.failed;
            for (const auto& w : workers_) {
                ended += w->completed.get_acquire() + w->failed.get_acquire();  // [C2]
            }
        }
        ended += pool_failed_.load(std::memory_order_relaxed);  // destructor only; no waiter then
        std::uint64_t accepted = 0;
        {
            std::lock_guard lock(retry_mutex_);  // requeues happen under it: a consistent pair
            accepted = queue_.pushed_count() - requeued_.load(std::memory_order_relaxed);
        }
        return accepted > ended ? accepted - ended : 0;
    }

    bool wait_idle_until(std::optional<clock::time_point> until) {
        idle_waiters_.fetch_add(1, std::memory_order_relaxed);  // a hint for workers; we also poll
        std::unique_lock lock(idle_wait_mutex_);
        bool idle = false;
        for (;;) {
            if (outstanding() == 0) {
                idle = true;
                break;
            }
            const auto now = clock::now();
            if (until && now >= *until) {
                break;
            }
            // Workers notify when a request ends while someone waits; the 1 ms cap covers a
            // notification that raced with our registration.
            auto step = now + std::chrono::milliseconds(1);
            idle_wait_cv_.wait_until(lock, until ? std::min(step, *until) : step);
        }
        idle_waiters_.fetch_sub(1, std::memory_order_relaxed);
        return idle;
    }

    void notify_idle_waiters() noexcept {
        if (idle_waiters_.load(std::memory_order_relaxed) != 0) {  // a hint; waiters also poll
            { std::lock_guard lock(idle_wait_mutex_); }
            idle_wait_cv_.notify_all();
        }
    }

    // ---------------------------------------------------------------- worker state

    struct worker_slot {
        // The attempt handshake between this worker and whoever stops its attempt (the supervisor
        // for deadlines, shutdown for cancellation): none → deadline | unbounded → (stopping →
        // stopped) → none. Only the stopper that wins the CAS into `stopping` touches the source.
        alignas(detail::cache_line) std::atomic<std::uint64_t> attempt{detail::attempt_none};
        std::atomic<std::int64_t> timeout_ns{0};  // the timed attempt's timeout; published by [A1]
        std::uint64_t attempt_number = 0;         // the worker's own; tags unstamped attempts
        std::atomic<detail::stop_cause> cause{detail::stop_cause::none};  // published by [A2]
        std::stop_source source;  // the attempt's; replaced by the worker only after it was stopped
        std::stop_token token;    // source.get_token(), cached so a call costs no extra refcount
        // The futex the worker sleeps on: 0 = asleep or awake, 1 = woken.
        alignas(detail::cache_line) std::atomic<std::uint32_t> wake{0};
        bool in_idle_stack = false;       // guarded by idle_mutex_
        std::int64_t idle_since_ns = 0;   // guarded by idle_mutex_
        bool retiring = false;            // guarded by workers_mutex_
        bool stuck = false;               // guarded by workers_mutex_
        std::int64_t stopped_at_ns = 0;   // guarded by workers_mutex_ (supervisor)
        std::atomic<bool> exited{false};  // set by the worker last; see [X1]
        std::size_t id = 0;
        std::jthread thread;  // guarded by workers_mutex_
        // Single-writer counters, on their own line so stats() readers never slow the worker.
        alignas(detail::cache_line) detail::owned_counter completed;
        detail::owned_counter failed;
        detail::owned_counter retried;
        detail::owned_counter timed_out;
        detail::owned_counter late;
        detail::owned_counter cancelled;
        detail::owned_counter expired;
        detail::owned_histogram wait_time;  // sampled queue waits; single writer
        detail::owned_histogram run_time;   // sampled attempt run times; single writer
    };

    struct totals {
        std::uint64_t completed = 0, failed = 0, retried = 0, timed_out = 0, late = 0,
                      cancelled = 0, expired = 0;
    };

    template <class Handler>
    static detail::erased_handler<Request> check_handler(Handler&& h) {
        using H = std::decay_t<Handler>;
        static_assert(!detail::takes_request_by_value<H, Request>,
                      "dispatcher<Request>: the handler takes the request by value, so what it "
                      "writes into the request (state kept across retries, results read by "
                      "on_success) is lost with its copy: take it as Request& (const Request& if "
                      "it only reads)");
        static_assert(detail::takes_request_by_value<H, Request> || request_handler<H, Request>,
                      "dispatcher<Request>: the handler must be callable as "
                      "handler(Request&, const std::stop_token&) or handler(Request&), the request "
                      "by reference; check the request type and the parameter order");
        if (detail::is_null_callable(h)) {
            // Found at construction, not as a failure of every request (an empty std::function)
            // or a crash on a worker thread (a null function pointer).
            throw std::invalid_argument("workerpool: the handler is null (an empty std::function "
                                        "or a null function pointer)");
        }
        return detail::erased_handler<Request>(H(std::forward<Handler>(h)));
    }

    // ---------------------------------------------------------------- submission

    [[nodiscard]] std::int64_t resolve_timeout(const job_options& jo) const noexcept {
        return jo.timeout.count() > 0 ? jo.timeout.count() : options_.default_timeout.count();
    }
    [[nodiscard]] static std::int64_t resolve_expiry(const job_options& jo) noexcept {
        return jo.deadline == clock::time_point{}
                   ? 0
                   : std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   jo.deadline.time_since_epoch())
                                                   .count());
    }
    [[nodiscard]] unsigned resolve_attempts(const job_options& jo) const noexcept {
        return jo.max_attempts > 0 ? jo.max_attempts : options_.retry.max_attempts;
    }
    // Returns the time now for one submit in `latency_sample_every` on this thread, else 0.
    [[nodiscard]] std::int64_t sample_enqueue_time() const noexcept {
        const unsigned every = options_.latency_sample_every;
        if (every == 0 || --detail::latency_countdown != 0) {
            return 0;
        }
        detail::latency_countdown = every;
        return detail::now_ns();
    }

    void after_push() noexcept {
        // [W1] Dekker with a worker going to sleep: our claim (the queue's seq_cst CAS) precedes
        // this load; the sleeper's seq_cst increment precedes its re-check of the queue. One of
        // the two sees the other, so an item is never left with every worker asleep.
        if (idle_count_.load(std::memory_order_seq_cst) != 0) {
            wake_one_idle();
        } else if (worker_count_.load(std::memory_order_relaxed) == 0) {
            kick_supervisor();  // min_workers == 0 and nobody is running: start one now
        }
    }

    // Counts a submit / submit_for call in `submitters_inside_` from its first wait for a slot
    // until it returns, so that the destructor can wait for a producer it woke to leave the call
    // before the members it touches are destroyed. The fast path (a slot free at once) is not
    // counted: a call that has not waited cannot be "blocked when the destructor began".
    class inside_submit {
    public:
        inside_submit() = default;
        inside_submit(const inside_submit&) = delete;
        inside_submit& operator=(const inside_submit&) = delete;
        inside_submit(inside_submit&&) = delete;
        inside_submit& operator=(inside_submit&&) = delete;
        ~inside_submit() {
            if (count_ != nullptr) {
                // [S1] the call's last access to the pool: publishes all of them; pairs with [S2]
                count_->fetch_sub(1, std::memory_order_release);
            }
        }
        void enter(std::atomic<std::size_t>& count) noexcept {
            if (count_ == nullptr) {
                // [S0] seq_cst: with close_intake's seq_cst close and the destructor's seq_cst
                // load [S2], a call the destructor does not count entered its wait after intake
                // closed, i.e. it was made on an object already being destroyed.
                count.fetch_add(1, std::memory_order_seq_cst);
                count_ = &count;
            }
        }

    private:
        std::atomic<std::size_t>* count_ = nullptr;
    };

    // Closes intake (idempotent; it wakes blocked submitters) and waits until every submit call
    // counted by `inside_submit` has returned. They return promptly: each one sees the queue
    // closed on its next check. Called by the destructor before any member is destroyed.
    void wait_for_submitters_to_leave() noexcept {
        close_intake();
        // [S2] seq_cst, see [S0]; as an acquire it pairs with [S1], so what the last submitter
        // did to the pool happens before the destruction of the members.
        for (unsigned polls = 0; submitters_inside_.load(std::memory_order_seq_cst) != 0; ++polls) {
            if (polls < 64) {
                std::this_thread::yield();
            } else {
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
        }
    }

    submit_status submit_until(Request& r, job_options jo,
                               std::optional<clock::time_point> until) noexcept {
        route_options_.apply(r, jo);
        inside_submit inside;  // counts this call from its first wait until it returns
        for (;;) {
            const submit_status s =
                queue_.try_emplace(std::move(r), resolve_timeout(jo), resolve_expiry(jo),
                                   resolve_attempts(jo), sample_enqueue_time());
            if (s == submit_status::accepted) {
                after_push();
                return s;
            }
            if (s == submit_status::closed) {
                return s;
            }
            if (detail::current_pool == this || (until && clock::now() >= *until)) {
                rejected_.fetch_add(1, std::memory_order_relaxed);  // statistics only
                return submit_status::full;
            }
            inside.enter(submitters_inside_);  // from here on the destructor waits for us
            if (spin_for_free_slots()) {
                continue;
            }
            if (!wait_for_free_slot(until)) {
                if (queue_.is_closed()) {
                    return submit_status::closed;
                }
                rejected_.fetch_add(1, std::memory_order_relaxed);  // statistics only
                return submit_status::full;
            }
        }
    }

    // Workers free slots fast: a producer that found the queue full polls a moment before it
    // pays for a sleep and a wake-up. For the first few microseconds it waits for a batch of
    // free slots in its home ring (a quarter of the ring, at most 64) rather than one: refilling
    // each slot as soon as it frees keeps the producer and the workers in lockstep on the same
    // cache lines, which ran one producer and one worker at a third of the speed on a 2-core VM
    // (scripts/bench_ab.py). It watches the batch's last slot, not the workers' index, so its
    // polling does not slow the pops it waits for. After that it takes any free slot, so slow
    // workers never make it wait for a batch. Returns whether a slot may be free (or the queue
    // closed).
    bool spin_for_free_slots() noexcept {
        const bounded_queue<envelope>& home = queue_.home_ring();
        const std::size_t batch =
            std::max<std::size_t>(1, std::min<std::size_t>(64, home.capacity() / 4));
        const std::int64_t batch_wait_ns =
            std::min<std::int64_t>(options_.spin_before_sleep.count() / 4, 10'000);
        bool want_batch = batch > 1;
        std::int64_t batch_until = 0;
        return spin_until([&](bool slow_check) {
            if (queue_.is_closed()) {
                return true;
            }
            if (!want_batch) {
                return queue_.free_slots() != 0;
            }
            if (home.has_room_for(batch)) {
                return true;
            }
            if (slow_check) {
                const std::int64_t now = detail::now_ns();
                if (batch_until == 0) {
                    batch_until = now + batch_wait_ns;
                } else if (now >= batch_until) {
                    want_batch = false;
                }
            }
            return false;
        });
    }

    // Returns false if the wait timed out; true if a slot may be free (or the queue closed).
    bool wait_for_free_slot(std::optional<clock::time_point> until) noexcept {
        std::unique_lock lock(producer_mutex_);
        // [W3] Dekker with consumers: our increment precedes our check of the free slots; a
        // consumer's pop (seq_cst CAS) precedes its load of this count. seq_cst on all four.
        blocked_producers_.fetch_add(1, std::memory_order_seq_cst);
        producer_wake_pending_.store(false,
                                     std::memory_order_seq_cst);  // let the next pop notify us
        bool ok = true;
        while (queue_.free_slots() == 0 && !queue_.is_closed()) {
            if (until) {
                if (producer_cv_.wait_until(lock, *until) == std::cv_status::timeout) {
                    ok = queue_.free_slots() != 0 || queue_.is_closed();
                    break;
                }
            } else {
                producer_cv_.wait(lock);
            }
            producer_wake_pending_.store(false, std::memory_order_seq_cst);
        }
        blocked_producers_.fetch_sub(1, std::memory_order_relaxed);  // only a hint for consumers
        return ok;
    }

    void after_pop() noexcept {
        // [W3] consumer side: the pop's seq_cst CAS precedes this seq_cst load.
        if (blocked_producers_.load(std::memory_order_seq_cst) != 0 &&
            !producer_wake_pending_.exchange(true, std::memory_order_seq_cst)) {
            // One notification per sleep of the producers, not one per freed slot: a woken
            // producer refills the queue, then polls for spin_before_sleep before it sleeps
            // again, so it sleeps (and costs a wake-up) only when the workers are slow.
            { std::lock_guard lock(producer_mutex_); }
            producer_cv_.notify_all();
        }
    }

    void close_intake() noexcept {
        queue_.close();
        closing_.store(true, std::memory_order_seq_cst);  // seq_cst: re-checked by retry scheduling
        { std::lock_guard lock(producer_mutex_); }
        producer_cv_.notify_all();
    }

    // ---------------------------------------------------------------- idle workers

    void wake_one_idle() noexcept {
        worker_slot* w = nullptr;
        {
            std::lock_guard lock(idle_mutex_);
            if (!idle_stack_.empty()) {
                w = idle_stack_.back();  // the most recently active: its caches are warm
                idle_stack_.pop_back();
                w->in_idle_stack = false;
                idle_count_.fetch_sub(1, std::memory_order_seq_cst);  // [D3] a worker wakes
            }
        }
        if (w != nullptr) {
            signal(*w);
            note_worker_awake();
        }
    }

    // [D3] After a worker became awake (its idle_count_ decrement, seq_cst, came first): if the
    // supervisor plans to sleep longer than the pool's default timeout allows, wake it, since the
    // worker's timed attempts publish without a fence. Pairs with plan_sleep's store of the
    // horizon then load of idle_count_: one of the two sides sees the other.
    void note_worker_awake() noexcept {
        if (awake_period_ns_ != 0 &&
            stamp_horizon_ns_.load(std::memory_order_seq_cst) > awake_period_ns_) {
            kick_supervisor();
        }
    }

    void wake_all_idle() noexcept {
        std::vector<worker_slot*> woken;
        {
            std::lock_guard lock(idle_mutex_);
            woken.swap(idle_stack_);
            idle_stack_.reserve(woken.capacity());
            for (worker_slot* w : woken) {
                w->in_idle_stack = false;
            }
            idle_count_.store(0, std::memory_order_seq_cst);  // [D3] workers wake
        }
        for (worker_slot* w : woken) {
            signal(*w);
        }
        note_worker_awake();
    }

    // Wakes `w` if it sleeps; otherwise it will notice its stop request before it sleeps.
    void wake_specific(worker_slot& w) noexcept {
        bool was_idle = false;
        {
            std::lock_guard lock(idle_mutex_);
            if (w.in_idle_stack) {
                idle_stack_.erase(std::find(idle_stack_.begin(), idle_stack_.end(), &w));
                w.in_idle_stack = false;
                idle_count_.fetch_sub(1, std::memory_order_relaxed);  // guarded by idle_mutex_
                was_idle = true;
            }
        }
        if (was_idle) {
            signal(w);
        }
    }

    static void signal(worker_slot& w) noexcept {
        w.wake.store(
            1, std::memory_order_release);  // [S1] pairs with [S2]: the sleeper wakes after it
        w.wake.notify_one();
    }

    // Returns when there may be work, or the worker must look at its stop conditions.
    void sleep_until_work(worker_slot& w, const std::stop_token& st) noexcept {
        {
            std::lock_guard lock(idle_mutex_);
            w.in_idle_stack = true;
            w.idle_since_ns = detail::now_ns();
            idle_stack_.push_back(&w);  // never allocates: reserved for every worker
            idle_count_.fetch_add(
                1, std::memory_order_seq_cst);  // [W1] sleeper side of the Dekker pair
        }
        const bool must_look = queue_.has_claimed_elements() || st.stop_requested() ||
                               draining_.load(std::memory_order_seq_cst) ||
                               cancel_.load(std::memory_order_seq_cst);
        if (must_look) {
            bool still_listed = false;
            {
                std::lock_guard lock(idle_mutex_);
                if (w.in_idle_stack) {
                    idle_stack_.erase(std::find(idle_stack_.begin(), idle_stack_.end(), &w));
                    w.in_idle_stack = false;
                    idle_count_.fetch_sub(1, std::memory_order_seq_cst);  // [D3] awake again
                    still_listed = true;
                }
            }
            if (still_listed) {
                note_worker_awake();
                return;
            }
            // Someone took us off the stack and is about to signal: consume that signal.
        }
        w.wake.wait(0, std::memory_order_acquire);   // [S2] pairs with [S1]
        w.wake.store(0, std::memory_order_relaxed);  // only this worker waits on it
    }

    // ---------------------------------------------------------------- workers

    void run_worker(const std::stop_token& st, worker_slot& w) noexcept {
        detail::current_pool = this;
        name_thread(w.id);
        if (options_.on_worker_start) {
            try {
                options_.on_worker_start(w.id);
            } catch (...) {
                callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            }
        }
        std::minstd_rand rng(static_cast<std::uint_fast32_t>(rng_seed_ + w.id * 7919));
        std::optional<envelope> current;
        // With several rings, the ring a pop starts at: the worker's own, moved on by one every
        // `pops_per_ring` pops. Starting at the same ring for ever would starve the other rings
        // whenever there are fewer workers than rings and that one is never empty.
        constexpr unsigned pops_per_ring = 32;
        const std::size_t rings = queue_.shard_count();
        std::size_t home = w.id % rings;  // kept below `rings`: no division per pop
        unsigned pops_here = 0;
        for (;;) {
            if (st.stop_requested() ||
                cancel_.load(std::memory_order_acquire)) {  // pairs with shutdown's store
                break;
            }
            const bool popped = queue_.consume(
                home, [&current](envelope&& e) noexcept { current.emplace(std::move(e)); });
            if (popped) {
                if (++pops_here == pops_per_ring) {
                    pops_here = 0;
                    home = home + 1 == rings ? 0 : home + 1;
                }
                after_pop();
                process(w, *current, rng);
                current.reset();
                notify_idle_waiters();
                continue;
            }
            if (draining_.load(std::memory_order_acquire)) {  // pairs with shutdown's store
                if (!queue_.has_claimed_elements()) {
                    break;  // closed and empty: nothing more can arrive
                }
                std::this_thread::yield();  // a producer is still writing the last element
                continue;
            }
            if (!spin_for_work(st, home)) {
                sleep_until_work(w, st);
            }
        }
        finish_worker(w);
    }

    // Polls briefly before sleeping; returns true if there may be work (or a reason to look).
    // With several rings it polls the one it would pop from first, and all of them only on the
    // slow checks: every ring's two indices are written by its producers and workers, and many
    // spinning workers reading all of them on every poll slow those writers down.
    bool spin_for_work(const std::stop_token& st, std::size_t home) const noexcept {
        return spin_until([&](bool slow_check) {
            return queue_.has_claimed_elements_at(home) ||
                   (slow_check &&
                    ((queue_.shard_count() > 1 && queue_.has_claimed_elements()) ||
                     st.stop_requested() ||
                     draining_.load(
                         std::memory_order_relaxed)));  // a hint; re-read with order later
        });
    }

    // Polls `ready(slow_check)` for up to `spin_before_sleep`: 64 pauses, then yields so that a
    // thread sharing our core can make the progress we wait for. `slow_check` is true every 8th
    // poll, for conditions too costly to test each time. Returns whether `ready` became true.
    template <class Ready>
    bool spin_until(Ready&& ready) const noexcept {
        const std::int64_t budget = options_.spin_before_sleep.count();
        if (budget <= 0) {
            return false;
        }
        std::int64_t end = 0;
        for (unsigned i = 0;; ++i) {
            const bool slow_check = (i & 7) == 0;
            if (ready(slow_check)) {
                return true;
            }
            if (i < 64) {
                detail::cpu_relax();
                continue;
            }
            if (slow_check) {
                const std::int64_t now = detail::now_ns();
                if (end == 0) {
                    end = now + budget;
                } else if (now >= end) {
                    return false;
                }
            }
            std::this_thread::yield();
        }
    }

    void process(worker_slot& w, envelope& e, std::minstd_rand& rng) noexcept {
        if (e.expires_ns != 0 && detail::now_ns() >= e.expires_ns) {
            w.expired.bump();
            dead_letter(w, e, failure_reason::expired);
            return;
        }
        ++e.attempts;
        if (e.attempts > 1) {
            w.retried.bump();
        }
        const std::int64_t started = e.enqueued_ns != 0 ? detail::now_ns() : 0;
        if (started != 0) {
            w.wait_time.record(started - e.enqueued_ns);
        }
        // Publish the attempt. [A1] release: a source replaced after the last stop (and the
        // timeout below) are visible to a stopper or stamper whose CAS reads this value.
        if (e.timeout_ns > 0) {
            // No clock read here (40 ns on a VM): the supervisor stamps the deadline when it first
            // sees the attempt, which it does within detail::stamp_period of the start.
            w.timeout_ns.store(e.timeout_ns, std::memory_order_relaxed);  // published by [A1]
            w.attempt_number = (w.attempt_number + 1) & 0xffff'ffffU;
            const std::uint64_t value = detail::attempt_unstamped | w.attempt_number;
            if (e.timeout_ns >= covered_timeout_ns_) {
                // The common case, a timeout no shorter than the pool's default: while this
                // worker is awake the supervisor comes round at least every awake_period_ns_
                // ([D3]), which is soon enough. No fence on the hot path.
                w.attempt.store(value, std::memory_order_release);  // [A1]
            } else {
                // [D1] seq_cst: Dekker with the supervisor's publication of its horizon [D2].
                w.attempt.store(value, std::memory_order_seq_cst);
                // The supervisor never sleeps past a tick, so the horizon is at most the scale
                // interval, and stamp_period(timeout) < horizon reduces to this (no division):
                const std::int64_t horizon = stamp_horizon_ns_.load(std::memory_order_seq_cst);
                if (horizon > 1'000'000 && e.timeout_ns < 20 * horizon) {
                    kick_supervisor();  // the supervisor sleeps too long to stamp us in time
                }
            }
        } else {
            w.attempt.store(detail::attempt_unbounded, std::memory_order_release);
        }
        std::exception_ptr error;
        try {
            handler_(e.request, w.token);
        } catch (...) {
            error = std::current_exception();
        }
        const detail::stop_cause cause = end_attempt(w);
        if (started != 0) {
            w.run_time.record(detail::now_ns() - started);
        }
        if (!error) {
            if (cause == detail::stop_cause::deadline) {
                w.late.bump();
            }
            if (options_.on_success) {
                try {
                    options_.on_success(e.request);
                } catch (...) {
                    callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
                }
            }
            w.completed.bump();  // [C1] last: the request's whole outcome is published
            return;
        }
        e.last_error = error;
        if (cause == detail::stop_cause::shutdown) {
            w.cancelled.bump();
            dead_letter(w, e, failure_reason::cancelled);
            return;
        }
        const failure_reason reason = cause == detail::stop_cause::deadline
                                          ? failure_reason::timed_out
                                          : failure_reason::error;
        if (reason == failure_reason::timed_out) {
            w.timed_out.bump();
        }
        if (e.attempts < e.max_attempts && should_retry(error, e.attempts)) {
            schedule_retry(w, e, rng);
        } else {
            dead_letter(w, e, reason);
        }
    }

    // Ends the attempt; returns why its token was stopped, if it was.
    detail::stop_cause end_attempt(worker_slot& w) noexcept {
        std::uint64_t s = w.attempt.load(std::memory_order_acquire);  // [A3] pairs with [A2]
        for (;;) {
            if (s == detail::attempt_stopping) {
                std::this_thread::yield();  // a stopper is inside request_stop(); it finishes soon
                s = w.attempt.load(std::memory_order_acquire);  // [A3]
                continue;
            }
            // acq_rel: acquire pairs with [A2] (sees `cause`); release orders our attempt's end
            // before a later stopper's CAS fails on `none`.
            if (w.attempt.compare_exchange_weak(s, detail::attempt_none, std::memory_order_acq_rel,
                                                std::memory_order_acquire)) {
                break;
            }
        }
        if (s != detail::attempt_stopped) {
            return detail::stop_cause::none;
        }
        const detail::stop_cause cause =
            w.cause.load(std::memory_order_relaxed);  // ordered by [A3]
        // The source is spent: make a fresh one (the only allocation, and only after a stop).
        try {
            w.source = std::stop_source();
            w.token = w.source.get_token();
        } catch (...) {
            // Out of memory: keep the stopped source; later attempts see a stopped token at once
            // and fail fast rather than the pool aborting.
        }
        {
            std::lock_guard lock(workers_mutex_);
            if (w.stuck) {
                w.stuck = false;
                --stuck_count_;
                const std::size_t before = worker_count_.load(std::memory_order_relaxed);
                pending_events_.push_back(
                    make_event(event_kind::worker_recovered, "handler returned", before));
                if (replacements_ > 0 && !w.retiring) {
                    --replacements_;  // our replacement keeps running; we are surplus now
                    retire_locked(w);
                    pending_events_.push_back(make_event(
                        event_kind::scale_down, "stuck worker recovered, surplus", before));
                }
            }
        }
        flush_pending_events();
        return cause;
    }

    // Claims `w`'s attempt if it still holds `expected`, and stops its token.
    // Pre: workers_mutex_ held (the slot stays alive).
    static bool try_stop(worker_slot& w, std::uint64_t expected,
                         detail::stop_cause cause) noexcept {
        // acquire pairs with [A1]: we see the worker's current source object.
        if (!w.attempt.compare_exchange_strong(expected, detail::attempt_stopping,
                                               std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
            return false;
        }
        w.cause.store(cause, std::memory_order_relaxed);  // published by [A2]
        w.source.request_stop();  // runs the handler's stop callbacks on this thread
        w.attempt.store(detail::attempt_stopped,
                        std::memory_order_release);  // [A2] pairs with [A3]
        return true;
    }

    [[nodiscard]] bool should_retry(const std::exception_ptr& error, unsigned attempts) noexcept {
        if (!options_.retry.retry_if) {
            return default_retry_if(error);
        }
        try {
            return options_.retry.retry_if(error, attempts);
        } catch (...) {
            callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            return false;
        }
    }

    void schedule_retry(worker_slot& w, envelope& e, std::minstd_rand& rng) noexcept {
        const double unit = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        const auto delay = backoff_delay(options_.retry, e.attempts, unit);
        const std::int64_t due = detail::add_saturated(detail::now_ns(), delay.count());
        if (e.expires_ns != 0 && due >= e.expires_ns) {
            w.expired.bump();
            dead_letter(w, e, failure_reason::expired);  // a retry never waits past the deadline
            return;
        }
        bool queued = false;
        try {
            std::lock_guard lock(retry_mutex_);
            if (retry_closed_) {
                handed_back_.push_back(std::move(e));  // shutdown began: hand it back unprocessed
            } else {
                retry_queue_.emplace(due, std::move(e));
                retry_pending_.fetch_add(1,
                                         std::memory_order_relaxed);  // statistics and scaling only
                queued = true;
            }
        } catch (...) {
            dead_letter(w, e, failure_reason::error);  // out of memory for the delay queue
            return;
        }
        if (queued) {
            emit(event_kind::retry_scheduled, "handler threw", e.attempts);
            // [D1]-like: the delay queue is read under retry_mutex_ after the supervisor publishes
            // its wake-up time, so either it sees this entry or we see its time here.
            if (due < next_wake_ns_.load(std::memory_order_seq_cst)) {
                kick_supervisor();
            }
        }
    }

    void dead_letter(worker_slot& w, envelope& e, failure_reason reason) noexcept {
        emit(event_kind::dead_letter, to_string(reason), e.attempts);
        deliver_failure(std::move(e.request), reason, e.attempts, e.last_error);
        w.failed.bump();  // [C1] after the sink ran: wait_idle returns after on_failure did
    }

    void deliver_failure(Request&& r, failure_reason reason, unsigned attempts,
                         std::exception_ptr error) noexcept {
        if (!options_.on_failure) {
            return;
        }
        try {
            options_.on_failure(failure<Request>{std::move(r), reason, attempts, std::move(error)});
        } catch (...) {
            callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        }
    }

    // For requests that the destructor must discard: counted failed, reason `cancelled`.
    void dead_letter_unowned(Request&& r, unsigned attempts = 0,
                             std::exception_ptr error = {}) noexcept {
        pool_failed_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        emit(event_kind::dead_letter, "cancelled", attempts);
        deliver_failure(std::move(r), failure_reason::cancelled, attempts, std::move(error));
    }

    void finish_worker(worker_slot& w) noexcept {
        if (options_.on_worker_stop) {
            try {
                options_.on_worker_stop(w.id);
            } catch (...) {
                callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            }
        }
        detail::current_pool = nullptr;
        {
            std::lock_guard lock(exit_mutex_);
            w.exited.store(true,
                           std::memory_order_release);  // [X1] pairs with the reaper's acquire
            threads_alive_ -= 1;
        }
        exit_cv_.notify_all();
        kick_supervisor();  // so the exited thread is joined promptly
    }

    // Names this thread "workerpool-<id>" (a worker) or "workerpool-sup" (the supervisor), so
    // that pool threads show in top -H and debuggers. Linux only; elsewhere a no-op.
    static void name_thread(std::optional<std::size_t> worker_id) noexcept {
#if defined(__linux__)
        char name[16] = "workerpool-sup";  // at most 15 characters and the terminator
        if (worker_id) {
            std::snprintf(name, sizeof name, "workerpool-%zu", *worker_id % 10000);
        }
        pthread_setname_np(pthread_self(), name);
#else
        (void)worker_id;
#endif
    }

    // ---------------------------------------------------------------- worker set (workers_mutex_)

    [[nodiscard]] std::size_t capacity_locked() const noexcept {
        return worker_count_.load(std::memory_order_relaxed) - stuck_count_;
    }

    // Whether one more live worker may start: at most max_workers_ that count as capacity, plus
    // one replacement per stuck worker up to options_.stuck_allowance. Pre: workers_mutex_ held.
    [[nodiscard]] bool below_thread_limit_locked() const noexcept {
        return worker_count_.load(std::memory_order_relaxed) <
               max_workers_ + std::min(stuck_count_, options_.stuck_allowance);
    }

    // Starts a worker. Pre: workers_mutex_ held. Throws std::system_error / std::bad_alloc.
    void spawn_worker_locked(bool count_as_scale_up) {
        auto slot = std::make_unique<worker_slot>();
        slot->id = next_worker_id_++;
        slot->token = slot->source.get_token();
        worker_slot* w = slot.get();
        {
            // Both allocations before anything changes: a slot in workers_ without a thread
            // would count as an awake worker forever.
            std::lock_guard lock(idle_mutex_);
            idle_stack_.reserve(workers_.size() + 1);
        }
        workers_.push_back(std::move(slot));
        {
            std::lock_guard lock(exit_mutex_);
            threads_alive_ += 1;
        }
        try {
            w->thread = std::jthread([this, w](std::stop_token st) { run_worker(st, *w); });
        } catch (...) {
            {
                std::lock_guard lock(exit_mutex_);
                threads_alive_ -= 1;
            }
            workers_.pop_back();
            throw;
        }
        const std::size_t n = worker_count_.load(std::memory_order_relaxed) + 1;
        worker_count_.store(n, std::memory_order_relaxed);  // written under workers_mutex_ only
        peak_workers_ = std::max(peak_workers_, n);
        if (count_as_scale_up) {
            ++scale_ups_;
        }
    }

    bool try_spawn_locked(bool count_as_scale_up) noexcept {
        try {
            spawn_worker_locked(count_as_scale_up);
            return true;
        } catch (...) {
            return false;
        }
    }

    // Marks `w` retiring and wakes it; it exits after its current request.
    void retire_locked(worker_slot& w) noexcept {
        w.retiring = true;
        worker_count_.store(worker_count_.load(std::memory_order_relaxed) - 1,
                            std::memory_order_relaxed);  // written under workers_mutex_ only
        ++scale_downs_;
        w.thread.request_stop();
        wake_specific(w);
    }

    // Retires the longest-idle worker, else a busy one that is not stuck.
    bool retire_one_locked() noexcept {
        worker_slot* victim = nullptr;
        {
            std::lock_guard lock(idle_mutex_);
            if (!idle_stack_.empty()) {
                victim = idle_stack_.front();  // the coldest: asleep the longest
            }
        }
        if (victim == nullptr || victim->retiring) {
            victim = nullptr;
            for (auto it = workers_.rbegin(); it != workers_.rend(); ++it) {
                if (!(*it)->retiring && !(*it)->stuck) {
                    victim = it->get();
                    break;
                }
            }
        }
        if (victim == nullptr) {
            return false;
        }
        retire_locked(*victim);
        return true;
    }

    // Adds every worker's latency counts, retired ones included. Pre: workers_mutex_ held.
    void merge_latency_locked(detail::histogram_counts& wait,
                              detail::histogram_counts& run) const noexcept {
        wait = retired_wait_;
        run = retired_run_;
        for (const auto& w : workers_) {
            w->wait_time.add_to(wait);
            w->run_time.add_to(run);
        }
    }

    // Moves the latency window on every 5 s. Pre: workers_mutex_ held.
    void rotate_latency_window_locked(std::int64_t now) noexcept {
        constexpr std::int64_t period = 5'000'000'000;
        if (now - window_rotated_ns_ < period) {
            return;
        }
        window_rotated_ns_ = now;
        window_base_wait_ = window_last_wait_;
        window_base_run_ = window_last_run_;
        merge_latency_locked(window_last_wait_, window_last_run_);
    }

    // Joins exited workers and folds their counters into retired_. Pre: workers_mutex_ held.
    void reap_exited_locked() noexcept {
        auto keep = workers_.begin();
        for (auto it = workers_.begin(); it != workers_.end(); ++it) {
            worker_slot& w = **it;
            if (!w.exited.load(std::memory_order_acquire)) {  // [X1]
                if (keep != it) {
                    *keep = std::move(*it);
                }
                ++keep;
                continue;
            }
            if (w.thread.joinable()) {
                w.thread.join();  // it has left run_worker: returns at once
            }
            if (!w.retiring) {  // exited without retiring (drain or cancel): no longer live
                worker_count_.store(worker_count_.load(std::memory_order_relaxed) - 1,
                                    std::memory_order_relaxed);  // under workers_mutex_ only
            }
            if (w.stuck) {
                --stuck_count_;
            }
            retired_.completed += w.completed.get();
            retired_.failed += w.failed.get();
            retired_.retried += w.retried.get();
            retired_.timed_out += w.timed_out.get();
            retired_.late += w.late.get();
            retired_.cancelled += w.cancelled.get();
            retired_.expired += w.expired.get();
            w.wait_time.add_to(retired_wait_);
            w.run_time.add_to(retired_run_);
        }
        workers_.erase(keep, workers_.end());
    }

    void join_all_workers() noexcept {
        std::vector<std::unique_ptr<worker_slot>> all;
        {
            std::lock_guard lock(workers_mutex_);
            for (auto& w : workers_) {
                w->thread.request_stop();
                wake_specific(*w);
            }
        }
        // Join without the lock: a stuck handler may take long, and it may call stats().
        std::vector<worker_slot*> pending;
        {
            std::lock_guard lock(workers_mutex_);
            for (auto& w : workers_) {
                pending.push_back(w.get());
            }
        }
        for (worker_slot* w : pending) {
            if (w->thread.joinable()) {
                w->thread.join();
            }
        }
        std::lock_guard lock(workers_mutex_);
        reap_exited_locked();
    }

    void abandon_construction() noexcept {
        close_intake();
        cancel_.store(true, std::memory_order_seq_cst);
        draining_.store(true, std::memory_order_seq_cst);
        wake_all_idle();
        if (supervisor_.joinable()) {
            supervisor_.request_stop();
            kick_supervisor();
            supervisor_.join();
        }
        join_all_workers();
        shut_down_ = true;
    }

    // ---------------------------------------------------------------- shutdown helpers

    bool wait_threads_exit_until(std::int64_t until_ns) {
        std::unique_lock lock(exit_mutex_);
        if (until_ns == std::numeric_limits<std::int64_t>::max()) {
            exit_cv_.wait(lock, [this] { return threads_alive_ == 0; });  // a grace of "for ever"
            return true;
        }
        return exit_cv_.wait_until(lock, detail::to_time_point(until_ns),
                                   [this] { return threads_alive_ == 0; });
    }

    void stop_all_attempts() noexcept {
        std::lock_guard lock(workers_mutex_);
        for (auto& w : workers_) {
            const std::uint64_t s = w->attempt.load(std::memory_order_acquire);  // pairs with [A1]
            if (s != detail::attempt_none && s != detail::attempt_stopping &&
                s != detail::attempt_stopped) {
                try_stop(*w, s, detail::stop_cause::shutdown);  // stamped or not
            }
        }
    }

    void drain_queue_into(std::vector<envelope>& out) {
        // The queue is closed, so it holds at most `capacity` more: reserving that much keeps the
        // noexcept callback below from ever allocating.
        out.reserve(out.size() + queue_.capacity());
        for (;;) {
            const bool popped =
                queue_.consume(0, [&out](envelope&& e) noexcept { out.push_back(std::move(e)); });
            if (popped) {
                continue;
            }
            if (!queue_.has_claimed_elements()) {
                return;
            }
            std::this_thread::yield();  // a producer that won a slot before close is still writing
        }
    }

    // ---------------------------------------------------------------- supervisor

    void kick_supervisor() noexcept {
        {
            std::lock_guard lock(supervisor_mutex_);
            supervisor_kicked_ = true;
        }
        supervisor_cv_.notify_one();
    }

    void supervise(const std::stop_token& st) noexcept {
        name_thread(std::nullopt);
        std::int64_t next_tick = detail::now_ns();
        std::uint64_t last_popped = queue_.pushed_count() - queue_.approx_size();
        std::int64_t last_progress = detail::now_ns();
        while (!st.stop_requested()) {
            std::int64_t now = detail::now_ns();
            std::int64_t wake_at = std::numeric_limits<std::int64_t>::max();
            {
                std::lock_guard lock(workers_mutex_);
                reap_exited_locked();
                rotate_latency_window_locked(now);
                wake_at = std::min(wake_at, sweep_deadlines_locked(now));
                if (now >= next_tick) {
                    const std::size_t depth = queue_.approx_size();
                    const std::uint64_t popped = queue_.pushed_count() - depth;
                    std::chrono::nanoseconds wait{0};
                    if (popped != last_popped) {
                        const auto window = std::max<std::int64_t>(1, now - last_progress);
                        wait = std::chrono::nanoseconds(static_cast<std::int64_t>(
                            static_cast<double>(depth) * static_cast<double>(window) /
                            static_cast<double>(popped - last_popped)));
                        last_popped = popped;
                        last_progress = now;
                    } else if (depth > 0) {
                        wait = std::chrono::nanoseconds(now - last_progress);
                    } else {
                        last_progress = now;
                    }
                    scale_locked(now, depth, wait);
                    next_tick = now + std::chrono::nanoseconds(options_.scale_interval).count();
                } else if (worker_count_.load(std::memory_order_relaxed) == 0 &&
                           queue_.has_claimed_elements() &&
                           !closing_.load(std::memory_order_relaxed)) {
                    try_spawn_locked(true);  // kicked by a submit to an empty pool
                }
                wake_at = std::min(wake_at, next_tick);
            }
            flush_pending_events();
            wake_at = std::min(wake_at, release_due_retries(now));
            wake_at = plan_sleep(now, wake_at);
            std::unique_lock lock(supervisor_mutex_);
            if (!supervisor_kicked_) {
                supervisor_cv_.wait_until(lock, detail::to_time_point(wake_at), [&] {
                    return supervisor_kicked_ || st.stop_requested();
                });
            }
            supervisor_kicked_ = false;
        }
    }

    // [D2] Publishes when the supervisor will wake, then re-reads what workers publish, so a
    // deadline or retry that is earlier than the planned wake-up is never slept through.
    std::int64_t plan_sleep(std::int64_t now, std::int64_t wake_at) noexcept {
        next_wake_ns_.store(wake_at,
                            std::memory_order_seq_cst);  // pairs with schedule_retry's load
        stamp_horizon_ns_.store(wake_at - now, std::memory_order_seq_cst);  // [D2] pairs with [D1]
        std::int64_t earliest = wake_at;
        {
            std::lock_guard lock(workers_mutex_);
            for (auto& w : workers_) {
                const std::uint64_t s = w->attempt.load(std::memory_order_seq_cst);  // [D2]
                if (detail::is_deadline(s)) {
                    earliest = std::min(earliest, static_cast<std::int64_t>(s));
                } else if (detail::is_unstamped(s)) {
                    earliest = now;  // started after our sweep: go round once more and stamp it
                }
            }
            // [D3] While any worker is awake it may start timed attempts without a fence: come
            // round every awake_period_ns_ to stamp them.
            if (awake_period_ns_ != 0 &&
                workers_.size() > idle_count_.load(std::memory_order_seq_cst)) {
                earliest = std::min(earliest, now + awake_period_ns_);
            }
        }
        if (earliest != wake_at) {
            stamp_horizon_ns_.store(earliest - now, std::memory_order_seq_cst);
        }
        {
            std::lock_guard lock(retry_mutex_);
            if (!retry_queue_.empty()) {
                earliest = std::min(earliest, retry_queue_.begin()->first);
            }
        }
        if (earliest != wake_at) {
            next_wake_ns_.store(earliest, std::memory_order_seq_cst);
        }
        return earliest;
    }

    // Stamps new timed attempts, stops overdue ones, declares stuck workers; returns the next
    // time worth waking for.
    std::int64_t sweep_deadlines_locked(std::int64_t now) noexcept {
        std::int64_t next = std::numeric_limits<std::int64_t>::max();
        const std::int64_t grace = options_.stuck_grace.count();
        const std::int64_t interval = std::chrono::nanoseconds(options_.scale_interval).count();
        // By index: declaring a worker stuck starts a replacement, which grows workers_.
        for (std::size_t i = 0; i < workers_.size(); ++i) {
            worker_slot& w = *workers_[i];
            std::uint64_t s = w.attempt.load(std::memory_order_acquire);  // pairs with [A1]
            if (detail::is_unstamped(s)) {
                // The attempt started at most one stamp period ago; its deadline counts from now.
                const std::int64_t timeout =
                    w.timeout_ns.load(std::memory_order_relaxed);  // ordered by [A1]
                // A timeout too long to add to now (or to tell from the markers) means "never".
                const auto deadline = static_cast<std::uint64_t>(std::min<std::int64_t>(
                    detail::add_saturated(now, timeout),
                    static_cast<std::int64_t>(detail::attempt_unstamped - 1)));
                // relaxed: the worker's end-of-attempt CAS only needs the value.
                if (w.attempt.compare_exchange_strong(s, deadline, std::memory_order_relaxed,
                                                      std::memory_order_relaxed)) {
                    s = deadline;
                }
            }
            if (detail::is_deadline(s)) {
                // Come back soon enough to stamp the next attempts of this kind in time.
                next = std::min(
                    next, now + detail::stamp_period(w.timeout_ns.load(std::memory_order_relaxed),
                                                     interval));
                const auto deadline = static_cast<std::int64_t>(s);
                if (deadline > now) {
                    next = std::min(next, deadline);
                } else if (try_stop(w, s, detail::stop_cause::deadline)) {
                    w.stopped_at_ns = now;
                    next = std::min(next, now + grace);
                    pending_events_.push_back(
                        make_event(event_kind::attempt_timed_out, "deadline",
                                   worker_count_.load(std::memory_order_relaxed)));
                }
            } else if (s == detail::attempt_stopped && !w.stuck && !w.retiring &&
                       w.cause.load(std::memory_order_relaxed) == detail::stop_cause::deadline &&
                       w.stopped_at_ns != 0) {
                if (now - w.stopped_at_ns >= grace) {
                    declare_stuck_locked(w);
                } else {
                    next = std::min(next, w.stopped_at_ns + grace);
                }
            }
        }
        return next;
    }

    void declare_stuck_locked(worker_slot& w) noexcept {
        w.stuck = true;
        ++stuck_count_;
        ++stuck_total_;
        const std::size_t before = worker_count_.load(std::memory_order_relaxed);
        pending_events_.push_back(
            make_event(event_kind::worker_stuck, "deadline + stuck grace", before));
        // A stuck worker is lost capacity, not load: replace it at once, within the allowance.
        if (!closing_.load(std::memory_order_relaxed) && below_thread_limit_locked() &&
            try_spawn_locked(true)) {
            ++replacements_;
            pending_events_.push_back(
                make_event(event_kind::scale_up, "replace stuck worker", before));
        }
    }

    void scale_locked(std::int64_t now, std::size_t depth, std::chrono::nanoseconds wait) noexcept {
        if (closing_.load(std::memory_order_relaxed)) {
            return;
        }
        std::size_t idle = 0;
        std::vector<worker_slot*> expired_idle;
        {
            std::lock_guard lock(idle_mutex_);
            idle = idle_stack_.size();
            for (worker_slot* w : idle_stack_) {  // oldest first
                if (now - w->idle_since_ns >= options_.idle_keep_alive.count()) {
                    expired_idle.push_back(w);
                }
            }
        }
        const std::size_t live = capacity_locked();
        scale_metrics m;
        m.now = detail::to_time_point(now);
        m.queue_depth = depth + retry_pending_.load(std::memory_order_relaxed);
        m.workers = live;
        m.idle_workers = std::min(idle, live);
        m.busy_workers = live - m.idle_workers;
        m.min_workers = min_workers_;
        m.max_workers = max_workers_;
        m.queue_wait = wait;
        std::size_t target = live;
        try {
            target = policy_(m);
        } catch (...) {
            callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        }
        target = std::clamp(target, min_workers_, max_workers_);
        if (target == 0 && m.queue_depth > 0) {
            target = 1;  // min_workers == 0: someone must serve a non-empty queue
        }
        const std::size_t before = worker_count_.load(std::memory_order_relaxed);
        if (target > live) {
            std::size_t added = 0;
            while (capacity_locked() < target && below_thread_limit_locked() &&
                   try_spawn_locked(true)) {
                ++added;
            }
            if (added > 0) {
                pending_events_.push_back(make_event(event_kind::scale_up, "backlog", before));
            }
            return;
        }
        if (target < live) {
            std::size_t removed = 0;
            while (capacity_locked() > target && retire_one_locked()) {
                ++removed;
            }
            if (removed > 0) {
                pending_events_.push_back(make_event(event_kind::scale_down, "quiet", before));
            }
            return;
        }
        // Keep-alive: idle workers past their time retire, down to min_workers.
        std::size_t retired = 0;
        for (worker_slot* w : expired_idle) {
            if (capacity_locked() <= min_workers_ || w->retiring) {
                continue;
            }
            retire_locked(*w);
            ++retired;
        }
        if (retired > 0) {
            pending_events_.push_back(
                make_event(event_kind::scale_down, "idle keep-alive", before));
        }
    }

    // Moves due retries into the queue; returns when the next one is due.
    std::int64_t release_due_retries(std::int64_t now) noexcept {
        std::int64_t next = std::numeric_limits<std::int64_t>::max();
        std::size_t pushed = 0;
        {
            std::lock_guard lock(retry_mutex_);
            while (!retry_queue_.empty()) {
                auto it = retry_queue_.begin();
                if (it->first > now) {
                    next = it->first;
                    break;
                }
                if (it->second.enqueued_ns != 0) {
                    it->second.enqueued_ns = now;  // sampled: its queue wait starts again now
                }
                const submit_status s = queue_.try_emplace(std::move(it->second));
                if (s == submit_status::full) {
                    next = now + 1'000'000;  // a retry is never dropped: try again in 1 ms
                    break;
                }
                if (s == submit_status::closed) {
                    break;  // shutdown collects what is left
                }
                requeued_.fetch_add(1, std::memory_order_relaxed);       // read under retry_mutex_
                retry_pending_.fetch_sub(1, std::memory_order_relaxed);  // statistics only
                retry_queue_.erase(it);
                ++pushed;
            }
        }
        for (; pushed > 0 && idle_count_.load(std::memory_order_seq_cst) != 0; --pushed) {
            wake_one_idle();  // [W1] as after_push()
        }
        return next;
    }

    // ---------------------------------------------------------------- events

    [[nodiscard]] event make_event(event_kind kind, const char* reason, std::size_t before,
                                   unsigned attempts = 0) const noexcept {
        event e{kind, clock::now()};
        e.workers_before = before;
        e.workers_after = worker_count_.load(std::memory_order_relaxed);
        e.queue_depth = queue_.approx_size();
        e.attempts = attempts;
        e.reason = reason;
        return e;
    }

    void emit(event_kind kind, const char* reason, unsigned attempts = 0) noexcept {
        if (options_.on_event) {
            const std::size_t n = worker_count_.load(std::memory_order_relaxed);
            deliver(make_event(kind, reason, n, attempts));
        }
    }

    void deliver(const event& e) noexcept {
        try {
            options_.on_event(e);
        } catch (...) {
            callback_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        }
    }

    void emit_all(const std::vector<event>& events) noexcept {
        if (options_.on_event) {
            for (const event& e : events) {
                deliver(e);
            }
        }
    }

    // Delivers events recorded under workers_mutex_, outside it. Any thread.
    void flush_pending_events() noexcept {
        std::vector<event> events;
        {
            std::lock_guard lock(workers_mutex_);
            if (pending_events_.empty()) {
                return;
            }
            events.swap(pending_events_);
        }
        emit_all(events);
    }

    // ---------------------------------------------------------------- data

    const options<Request> options_;
    const detail::erased_handler<Request> handler_;
    // The job_options of a request's route (handler_map::on), merged at submit; empty, and
    // skipped, for a handler without route options.
    const detail::route_options_source<Request> route_options_;
    detail::sharded_queue<envelope> queue_;
    scale_policy policy_;  // called by the supervisor only
    // Timed attempts with a timeout of at least this publish without a fence; see [D3].
    const std::int64_t covered_timeout_ns_;
    // While any worker is awake, the supervisor comes round this often (0: no default timeout).
    const std::int64_t awake_period_ns_;

    // Hot, shared, read-mostly words, each on its own line.
    alignas(detail::cache_line) std::atomic<std::size_t> idle_count_{0};  // sleepers; see [W1]
    alignas(detail::cache_line) std::atomic<std::size_t> blocked_producers_{0};  // see [W3]
    std::atomic<bool> producer_wake_pending_{false};  // one notify per batch; see after_pop()
    std::atomic<std::size_t> submitters_inside_{0};   // submit calls past their first wait; [S0]
    alignas(detail::cache_line) std::atomic<std::int64_t> next_wake_ns_{
        0};  // the supervisor's next wake-up; see schedule_retry
    std::atomic<std::int64_t> stamp_horizon_ns_{
        0};  // how long the supervisor sleeps; see [D1]/[D2]
    alignas(detail::cache_line) std::atomic<std::size_t> worker_count_{
        0};                              // written under workers_mutex_
    std::atomic<bool> closing_{false};   // intake closed
    std::atomic<bool> draining_{false};  // workers exit once the closed queue is empty
    std::atomic<bool> cancel_{false};    // workers exit after their current attempt
    alignas(detail::cache_line) std::atomic<std::uint64_t> rejected_{0};  // statistics only
    std::atomic<std::uint64_t> requeued_{0};     // retries pushed back; written under retry_mutex_
    std::atomic<std::size_t> retry_pending_{0};  // statistics and scaling only
    std::atomic<std::uint64_t> callback_errors_{0};  // statistics only
    std::atomic<std::uint64_t> pool_failed_{0};      // dead letters outside workers; statistics
    std::atomic<std::uint64_t> returned_{0};         // requests handed back by shutdown
    std::atomic<std::size_t> idle_waiters_{0};       // threads in wait_idle; a hint for workers

    std::mutex idle_wait_mutex_;
    std::condition_variable idle_wait_cv_;  // wait_idle sleeps here; notified when requests end

    mutable std::mutex workers_mutex_;
    std::vector<std::unique_ptr<worker_slot>> workers_;    // guarded by workers_mutex_
    std::vector<event> pending_events_;                    // guarded by workers_mutex_
    totals retired_;                                       // guarded by workers_mutex_
    detail::histogram_counts retired_wait_, retired_run_;  // guarded by workers_mutex_
    // Latency window: stats() reports counts since window_base_, which the supervisor moves up
    // to the previous rotation's totals every 5 s (so the window spans 5 to 10 s).
    detail::histogram_counts window_base_wait_, window_base_run_;  // guarded by workers_mutex_
    detail::histogram_counts window_last_wait_, window_last_run_;  // guarded by workers_mutex_
    std::int64_t window_rotated_ns_ = 0;                           // guarded by workers_mutex_
    std::size_t min_workers_;                                      // guarded by workers_mutex_
    std::size_t max_workers_;                                      // guarded by workers_mutex_
    std::size_t stuck_count_ = 0;                                  // guarded by workers_mutex_
    std::size_t replacements_ = 0;                                 // guarded by workers_mutex_
    std::size_t peak_workers_ = 0;                                 // guarded by workers_mutex_
    std::uint64_t scale_ups_ = 0;                                  // guarded by workers_mutex_
    std::uint64_t scale_downs_ = 0;                                // guarded by workers_mutex_
    std::uint64_t stuck_total_ = 0;                                // guarded by workers_mutex_
    std::size_t next_worker_id_ = 0;                               // guarded by workers_mutex_

    std::mutex idle_mutex_;
    std::vector<worker_slot*> idle_stack_;  // guarded by idle_mutex_; top = most recently active

    std::mutex producer_mutex_;
    std::condition_variable producer_cv_;  // blocked submitters; notified under producer_mutex_

    std::mutex exit_mutex_;
    std::condition_variable exit_cv_;
    std::size_t threads_alive_ = 0;  // guarded by exit_mutex_

    mutable std::mutex retry_mutex_;
    std::multimap<std::int64_t, envelope> retry_queue_;  // guarded by retry_mutex_; by due time
    std::vector<envelope> handed_back_;                  // guarded by retry_mutex_
    bool retry_closed_ = false;                          // guarded by retry_mutex_

    std::mutex supervisor_mutex_;
    std::condition_variable supervisor_cv_;
    bool supervisor_kicked_ = false;  // guarded by supervisor_mutex_

    std::mutex shutdown_mutex_;
    bool shut_down_ = false;  // guarded by shutdown_mutex_

    const unsigned rng_seed_;
    std::jthread supervisor_;  // last: started after everything above exists
};

}  // namespace workerpool
