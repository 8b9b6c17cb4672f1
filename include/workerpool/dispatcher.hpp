#pragma once

/// @file
/// `dispatcher<Request, Result>`, the worker pool itself: the public API, the worker loop (pop,
/// run an attempt, repeat; spin, then sleep) and the shutdown steps. Each mechanism they use
/// has a header of its own under `detail/` (see docs/design.md for the map).

#include <workerpool/bounded_queue.hpp>
#include <workerpool/detail/attempt_runner.hpp>
#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/callbacks.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/counters.hpp>
#include <workerpool/detail/delay_queue.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/erased_handler.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/idle_waiters.hpp>
#include <workerpool/detail/intake.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/detail/outcomes.hpp>
#include <workerpool/detail/pool_thread.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/detail/sharded_queue.hpp>
#include <workerpool/detail/shutdown_progress.hpp>
#include <workerpool/detail/spin.hpp>
#include <workerpool/detail/supervisor.hpp>
#include <workerpool/detail/supervisor_loop.hpp>
#include <workerpool/detail/tracking.hpp>
#include <workerpool/detail/usage_checks.hpp>
#include <workerpool/detail/worker_loop.hpp>
#include <workerpool/detail/worker_set.hpp>
#include <workerpool/handle.hpp>
#include <workerpool/handler.hpp>
#include <workerpool/options.hpp>
#include <workerpool/retry.hpp>
#include <workerpool/scaler.hpp>
#include <workerpool/shutdown_report.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace workerpool {

template <class Request, class Result = void>
class request_group;

/// A bounded, self-scaling pool of worker threads that runs a handler on each submitted `Request`
/// under a per-attempt timeout with retries, and never loses an accepted request.
///
/// Lifecycle: construct (starts `min_workers` workers and the supervisor thread) → submit from
/// any threads → `shutdown(grace)` (closes intake, drains until the grace is over, then stops
/// the tokens of running handlers, joins, and hands back every request it did not process) →
/// destroy. The destructor runs `shutdown(options.destructor_grace)` if nobody did, passes what it
/// could not process to `on_failure` as `cancelled` (with its attempts and last error, 0 and none
/// if it never ran), and then joins every thread,
/// waiting for a stuck handler if it must: it never detaches a thread that touches the pool.
///
/// Threads: the queue is one or more fixed rings (`bounded_queue`, see `options.queue_shards`);
/// each worker is a `std::jthread` with its own stop state; one supervisor `std::jthread` scales
/// the workers, stops attempts whose deadline passed, spots stuck workers, and re-enqueues retries
/// when their backoff is over.
///
/// Accounting: every accepted request ends exactly once — completed (its handler returned),
/// failed (handed to `on_failure`), or returned in `shutdown_report::unprocessed`.
///
/// Tracked requests (`try_submit_tracked` and its siblings) come with a `handle<Result>`: their
/// state, `cancel()`, `wait()`, `get()` and `co_await`. With `Result` other than `void` the
/// handler returns a `Result`, which `on_success` receives and `handle::get()` returns. A request
/// cancelled through its handle ends as failed, reason `cancelled` (see `handle::cancel`).
template <class Request, class Result = void>
class dispatcher : public detail::lvalue_submits<Request> {
    static_assert(detail::request_type_checks<Request, Result>::checked);

    using envelope = detail::envelope<Request>;
    using clock = std::chrono::steady_clock;
    using phase = detail::phase;
    // What a worker keeps in its slot, on the heap: the request it serves and raw room for the
    // failure record it hands to on_failure (a large Request would overflow its stack).
    struct worker_payload {  // NOLINT(cppcoreguidelines-pro-type-member-init): `failing` is raw
        std::optional<envelope> current;
        detail::uninitialized<failure<Request>> failing;
        [[no_unique_address]] detail::result_room<Result> result;  // what the handler returned
        detail::scheduled_turn turn;  // where `current` came from, if from the scheduler
    };
    using workers = detail::worker_set<worker_payload>;
    using queue_type = detail::sharded_queue<envelope>;
    using worker = typename workers::slot;

public:
    /// The request type.
    using request_type = Request;
    /// What the handler returns (`void`: nothing).
    using result_type = Result;

    /// Starts a pool of `o.min_workers` workers running `handler`.
    /// `handler` is called as `handler(Request&, std::stop_token)` (or `handler(Request&)`), on
    /// worker threads, concurrently, returning a `Result` unless `Result` is `void`; it signals
    /// failure by throwing. The token is stopped when the
    /// attempt's deadline passes or shutdown cancels it.
    /// Throws: `std::invalid_argument` naming the bad field of `o`, or when `handler` is null (an
    /// empty `std::function`, a null function pointer); `std::system_error` if a thread cannot be
    /// started; `std::bad_alloc`.
    template <class Handler>
    explicit dispatcher(Handler handler, options<Request, Result> o = {})
        : options_((detail::validate(o), std::move(o))),
          handler_(detail::checked_handler<Request, Result>(std::move(handler))),

          queue_(options_.capacity,
                 options_.queue_shards != 0
                     ? options_.queue_shards
                     : auto_queue_shards(options_.capacity, options_.max_workers)),
          callbacks_(options_.on_event), sched_(detail::schedule_settings::of(options_), &cancels_),
          workers_(options_.min_workers, options_.max_workers, options_.stuck_allowance),
          scale_interval_ns_(detail::saturated_ns(options_.scale_interval)),
          awake_period_ns_(detail::awake_period(options_.default_timeout, scale_interval_ns_)),
          intake_({options_, queue_, sched_, idle_, pressure_, signal_, workers_, awake_period_ns_},
                  detail::route_options_source<Request>::of(
                      static_cast<const std::decay_t<Handler>*>(handler_.target()))),
          outcomes_({options_, callbacks_, delay_, sched_, life_, signal_, workers_, idle_, queue_,
                     awake_period_ns_}),
          supervisor_({this, workers_, idle_, queue_, delay_, sched_, pressure_, callbacks_, life_,
                       signal_, cancels_, outcomes_},
                      {options_.stuck_grace.count(), options_.idle_keep_alive.count(),
                       scale_interval_ns_, awake_period_ns_, detail::policy_rests(options_)},
                      detail::policy_of(options_), worker_body()) {
        try {
            {
                std::lock_guard lock(workers_.mutex());
                for (std::size_t i = 0; i < options_.min_workers; ++i) {
                    workers_.spawn_or_throw_locked(idle_, worker_body(), false);
                }
            }
            supervisor_.start();
        } catch (...) {
            stop_and_join_everything();
            throw;
        }
    }

    dispatcher(const dispatcher&) = delete;             ///< Not copyable: it owns threads.
    dispatcher& operator=(const dispatcher&) = delete;  ///< Not copy-assignable.
    dispatcher(dispatcher&&) = delete;  ///< Not movable: its threads refer to it by address.
    dispatcher& operator=(dispatcher&&) = delete;  ///< Not move-assignable.

    /// Shuts down with `options.destructor_grace` if `shutdown()` was not called, hands what it
    /// could not process to `on_failure` (reason `cancelled`, 0 attempts if it never ran), and
    /// joins every thread. Blocks while a stuck handler runs; never terminates, never detaches.
    /// Producers blocked in `submit` / `submit_for` when it begins return `closed` (their requests
    /// untouched), and it waits for them to leave the call before any member is destroyed.
    /// Pre: not called from one of this pool's handlers; no other call on this pool starts, or is
    /// in progress other than a submit waiting for a slot (that is a use of a destroyed object).
    ~dispatcher() {
        bool collected = true;
        try {
            (void)shutdown_into(options_.destructor_grace, false);
        } catch (...) {
            // Out of memory while collecting: what was collected stays in shut_.left and is
            // dead-lettered below; what runs is stopped all the same (cooperative handlers would
            // otherwise keep the join below waiting for ever), and the rest is collected again
            // once every thread has left.
            collected = false;
            if (shut_.at != detail::shutdown_step::joined) {
                (void)cancel_the_rest();
            }
        }
        std::vector<envelope>& left = shut_.left;  // no other thread uses it from here on
        // Producers that were blocked in submit woke with `closed`; they must have left the call
        // before the members they touch are destroyed.
        close_intake();
        pressure_.wait_for_callers_to_leave();
        // Stopped already unless shutdown_into threw: its purge (deliver_cancelled) and the
        // discard below share the failure sink's room, one thread at a time.
        supervisor_.stop();
        outcomes_.discard(left);
        stop_and_join_everything();  // waits for stuck handlers: never detaches
        left.clear();
        try {
            if (!collected) {
                delay_.close_into(left, pressure_);
                queue_.drain_into(left);
                sched_.drain_into(left);
            }
            delay_.take_handed_back(left);  // failed on their own after shutdown returned
            sched_.take_handed_back(left);
        } catch (...) {
            // Still out of memory: what is left is destroyed with the queue, the scheduler and
            // the delay queue, counted nowhere (docs/guarantees.md).
        }
        outcomes_.discard(left);
    }

    /// Enqueues `r` without blocking.
    /// Returns `accepted` (and moves from `r`), `full`, or `closed`; on refusal `r` is untouched.
    /// A zero (or negative) `jo.timeout`, a zero `jo.max_attempts` or an epoch `jo.deadline` means
    /// the option of `r`'s route (`handler_map::on`), and where that is zero too, the pool's.
    /// A request with a `jo.key`, `jo.priority` or `jo.not_before` (and every request of a pool
    /// with `priority_lanes > 1` or a `rate_limit`) goes through the scheduler: its lane's bound
    /// applies instead of the queue's, and `full` also means out of memory there.
    /// Thread safety: any thread, including a handler of this pool. Never blocks; never allocates
    /// (with route options, unless taking a request's key allocates), except through the
    /// scheduler, which takes a short lock and allocates for what it holds.
    [[nodiscard]] submit_status try_submit(Request&& r, job_options jo = {}) noexcept {
        return intake_.try_submit(r, jo);
    }

    /// Enqueues `r`, blocking while the queue is full (back-pressure).
    /// Returns `accepted` (and moves from `r`) or `closed` (shutdown began, maybe while waiting;
    /// `r` is untouched). Called from one of this pool's own threads it does not block: it returns
    /// `full` instead of waiting for a slot that only its own pool could free. A request for the
    /// scheduler that it has no memory to hold is refused `full` at once, untouched (a noexcept
    /// call's way to say so: it cannot tell when memory comes back). `jo` as in `try_submit`.
    /// Thread safety: any thread. Blocks: while the queue (or the request's lane in the scheduler)
    /// is full.
    [[nodiscard]] submit_status submit(Request&& r, job_options jo = {}) noexcept {
        return intake_.submit_until(r, jo, detail::current_pool == this, std::nullopt);
    }

    /// Enqueues `r`, blocking up to `timeout` while the queue is full.
    /// Returns `accepted` (moves from `r`), `full` when the time ran out (or out of memory, as
    /// `submit`), or `closed`; on refusal `r` is untouched. From one of this pool's own threads it
    /// does not block (see `submit`).
    /// Thread safety: any thread. Blocks: up to `timeout`.
    template <class Rep, class Period>
    [[nodiscard]] submit_status submit_for(Request&& r, std::chrono::duration<Rep, Period> timeout,
                                           job_options jo = {}) noexcept {
        return intake_.submit_until(r, jo, detail::current_pool == this,
                                    detail::end_of_wait(timeout));
    }

    /// Enqueues as many of `requests` as there is room for now, in order, without blocking: one
    /// claim per ring and one wake-up decision per 64 requests (through the scheduler, for a key,
    /// a priority or a `not_before`: one pass of its lock per 64). Returns how many it took: it
    /// moved from exactly the first that many, and left the rest untouched (all of them when the
    /// pool is closed). `jo` as in `try_submit`. Thread safety: any thread, including a handler of
    /// this pool. Never blocks, never allocates (with route options, unless the key function does).
    [[nodiscard]] std::size_t try_submit_bulk(std::span<Request> requests,
                                              job_options jo = {}) noexcept {
        return intake_.try_submit_bulk(requests, jo);
    }

    /// Enqueues all of `requests`, in order, blocking while the queue is full (as `submit`);
    /// returns how many it took, a prefix: all of them, or fewer when shutdown began meanwhile,
    /// when called from one of this pool's own threads and the queue filled up (it does not
    /// wait for itself), or when the scheduler had no memory for the next (as `submit`). The rest
    /// are untouched. Thread safety: any thread. Blocks: while full.
    [[nodiscard]] std::size_t submit_bulk(std::span<Request> requests,
                                          job_options jo = {}) noexcept {
        return intake_.submit_bulk(requests, jo, detail::current_pool == this);
    }

    /// As `try_submit`, and returns the request's `handle` with the status (empty unless
    /// `accepted`). Throws: `std::bad_alloc` when more tracked requests are alive than ever before
    /// and no room for one more can be made (the request is then untouched).
    [[nodiscard]] tracked<Result> try_submit_tracked(Request&& r, job_options jo = {}) {
        return tracked_in(nullptr, r, jo, false);
    }

    /// As `submit`, and returns the request's `handle` with the status (see `try_submit_tracked`).
    [[nodiscard]] tracked<Result> submit_tracked(Request&& r, job_options jo = {}) {
        return tracked_in(nullptr, r, jo, true);
    }

    /// As `submit_for`, and returns the request's `handle` with the status (see
    /// `try_submit_tracked`).
    template <class Rep, class Period>
    [[nodiscard]] tracked<Result> submit_for_tracked(Request&& r,
                                                     std::chrono::duration<Rep, Period> timeout,
                                                     job_options jo = {}) {
        return tracked_in(nullptr, r, jo, true, detail::end_of_wait(timeout));
    }

    // A submit given a `Request` lvalue fails to compile: the message says to pass std::move.
    using detail::lvalue_submits<Request>::try_submit;
    using detail::lvalue_submits<Request>::submit;
    using detail::lvalue_submits<Request>::submit_for;
    using detail::lvalue_submits<Request>::try_submit_tracked;
    using detail::lvalue_submits<Request>::submit_tracked;
    using detail::lvalue_submits<Request>::submit_for_tracked;

    /// Stops intake, drains the queue for up to `grace`, then stops the token of every running
    /// handler, joins the workers, and returns every request it did not process.
    ///
    /// Step by step: later submits return `closed` and blocked submitters wake with `closed`;
    /// requests waiting out a retry backoff or for a `not_before` are handed back at once (with the
    /// later requests of their key); workers keep running queued requests, and those the
    /// scheduler holds, until nothing is left or `grace` is over (while paused: at once); then each
    /// running attempt's token is stopped (a handler that then throws reaches `on_failure` as
    /// `cancelled`), cooperative handlers are waited for up to `options.stuck_grace`, the queue's
    /// remainder is moved into the report, and the supervisor is joined. Handlers that ignore their
    /// token are counted in `stuck_workers`; their threads are joined by the destructor.
    ///
    /// Idempotent: a second call returns at once with an empty report. Called from one of this
    /// pool's own threads it only closes intake and returns a report with `deferred == true`.
    /// Throws: `std::bad_alloc` when it has no memory to collect or hand back what is left;
    /// nothing is lost: intake stays closed, what it had collected stays in the pool, and a later
    /// call goes on from where it stopped and hands back all of it (or the destructor
    /// dead-letters it).
    /// Thread safety: any thread; concurrent calls serialise. Blocks: up to about
    /// `grace + stuck_grace`.
    shutdown_report<Request> shutdown(std::chrono::nanoseconds grace) {
        return shutdown_into(grace, true);
    }

    /// Returns a snapshot of the counters and gauges (see `stats_snapshot`).
    /// Thread safety: any thread, also during shutdown; takes short internal locks.
    [[nodiscard]] stats_snapshot stats() const {
        stats_snapshot s;
        {
            std::lock_guard lock(workers_.mutex());
            workers_.rotate_latency_window_locked(detail::now_ns());  // a resting one may not tick
            workers_.fill_stats_locked(s);
        }
        // Counters kept outside the worker slots; all relaxed: statistics only.
        s.failed += outcomes_.discarded();
        s.cancelled += outcomes_.purged();
        s.submitted = delay_.submitted(queue_) + sched_.accepted();  // never goes back
        s.throttled = sched_.throttled();
        const std::size_t retries = sched_.retries_waiting();
        s.scheduled = std::max(sched_.held(), retries) - retries;
        s.rejected = intake_.rejected();
        s.callback_errors = callbacks_.errors();
        s.supervisor_wakeups = signal_.wakeups();
        s.queue_depth = queue_.approx_size();
        s.capacity = queue_.capacity();
        s.retry_pending = delay_.pending() + retries;
        s.idle = idle_.approx_count();
        return s;
    }

    /// Returns the number of live workers (not retiring; stuck ones and their replacements
    /// included). Exact right after `add_worker`, `remove_worker` or `set_worker_limits` return on
    /// the calling thread. Thread safety: any thread.
    [[nodiscard]] std::size_t worker_count() const noexcept { return workers_.live(); }

    /// Starts one more worker if the pool is below `max_workers`; returns whether it did.
    /// Thread safety: any thread. Never throws: a thread that cannot start returns false.
    bool add_worker() noexcept {
        const bool added = manually("add_worker", [this] {
            return !life_.at_least(phase::closed) && workers_.add_one_locked(idle_, worker_body());
        });
        if (added) {
            note_worker_awake();  // a new worker is awake
        }
        return added;
    }

    /// Retires one worker if the pool is above `min_workers`; returns whether it did. An idle
    /// worker is retired first; a busy one finishes its current request before it exits.
    /// Thread safety: any thread.
    bool remove_worker() {
        return manually("remove_worker", [this] { return workers_.remove_one_locked(idle_); });
    }

    /// Changes the worker limits at run time and moves the worker count into them at once.
    /// Throws: `std::invalid_argument` if `max_workers == 0` or `min_workers > max_workers`
    /// (the limits are then unchanged). Thread safety: any thread.
    void set_worker_limits(std::size_t min_workers, std::size_t max_workers) {
        detail::require(max_workers > 0, "max_workers", "must be > 0");
        detail::require(min_workers <= max_workers, "min_workers",
                        "must be <= options.max_workers");
        (void)manually("set_worker_limits", [&] {
            workers_.set_limits_and_move_locked(min_workers, max_workers, idle_, worker_body(),
                                                !life_.at_least(phase::closed));
            return true;
        });
        note_worker_awake();  // workers may have started
    }

    /// Blocks until every request submitted before the call has ended — completed, failed, or
    /// handed back by a shutdown — so the queue is empty, no handler runs and no retry waits.
    /// Does not stop intake: requests submitted meanwhile by other threads may keep it waiting.
    /// After it returns, the effects of those requests' handlers are visible to the caller.
    /// Thread safety: any thread but one of this pool's own (a handler, or a callback running on
    /// a worker or the supervisor), which would wait for itself.
    /// Throws: `wait_deadlock` when called from one of this pool's own threads.
    /// Blocks: until idle.
    void wait_idle() {
        if (detail::current_pool == this) {
            throw wait_deadlock("workerpool: wait_idle() called from one of the pool's own threads "
                                "(a handler or a callback) would wait for itself for ever");
        }
        (void)idle_waiters_.wait_until(std::nullopt, [this] { return outstanding(); });
    }

    /// As `wait_idle()`, for at most `timeout`; returns whether the pool became idle. From one of
    /// this pool's own threads it does not throw, but the calling request is itself outstanding,
    /// so it returns false when `timeout` is over.
    template <class Rep, class Period>
    bool wait_idle_for(std::chrono::duration<Rep, Period> timeout) {
        return idle_waiters_.wait_until(detail::end_of_wait(timeout),
                                        [this] { return outstanding(); });
    }

    /// Stops starting requests: from now on no worker starts one (a worker that had already taken
    /// one may still start it: at most one per worker); running handlers finish, submits are
    /// accepted up to capacity, retries and times keep falling due, `wait_idle` waits for
    /// `resume`. A `shutdown` while paused hands back at once all that is queued. Emits `paused`.
    /// Thread safety: any thread, also a handler. Idempotent.
    void pause() noexcept {
        if (sched_.set_paused(true)) {
            idle_.wake_all();  // a draining worker waiting for the scheduler leaves now
            callbacks_.emit(event_now(event_kind::paused, "pause", workers_.live()));
        }
    }

    /// Starts requests again after `pause` and wakes the workers. Emits `resumed`.
    /// Thread safety: any thread. Idempotent.
    void resume() noexcept {
        if (sched_.set_paused(false)) {
            idle_.wake_all();  // after the flag: a sleeper either sees it or is woken
            note_worker_awake();
            signal_.kick();  // the queue is load for the scaler again
            callbacks_.emit(event_now(event_kind::resumed, "resume", workers_.live()));
        }
    }

    /// Returns whether the pool is paused (`pause`). Thread safety: any thread.
    [[nodiscard]] bool paused() const noexcept { return sched_.paused(); }

    /// Returns the queue's exact capacity.
    [[nodiscard]] std::size_t capacity() const noexcept { return queue_.capacity(); }

    /// Returns the number of rings the queue is split into (`options.queue_shards`, or what 0
    /// picked). 1 means strict FIFO order.
    [[nodiscard]] std::size_t queue_shards() const noexcept { return queue_.shard_count(); }

private:
    friend class request_group<Request, Result>;

    // A tracked submit, for the pool's own calls (`group` null) and a group's: one try (`wait`
    // false), or waiting for room until `until`.
    tracked<Result> tracked_in(detail::group_link* group, Request& r, job_options jo, bool wait,
                               std::optional<clock::time_point> until = std::nullopt) {
        return tracking_.submit(
            [&](detail::completion_slot* t) {
                return wait ? intake_.submit_until(r, jo, detail::current_pool == this, until, t)
                            : intake_.try_submit(r, jo, t);
            },
            group);
    }

    // Runs a manual change of the worker count under the worker set's lock, then reports the
    // scale event (if the count moved) outside it; returns what `change` returned.
    template <class Change>
    bool manually(const char* reason, Change&& change) noexcept {
        std::optional<event> moved;  // no allocation once a worker runs
        bool changed = false;
        {
            std::lock_guard lock(workers_.mutex());
            const std::size_t before = workers_.live();
            changed = change();
            const std::size_t after = workers_.live();
            if (after != before) {
                moved = event_now(after > before ? event_kind::scale_up : event_kind::scale_down,
                                  reason, before);
            }
        }
        if (moved) {
            callbacks_.emit(*moved);
        }
        if (signal_.take_resting()) {
            signal_.kick();  // a count above min_workers is something for the supervisor to shed
        }
        return changed;
    }

    // ---------------------------------------------------------------- submission

    void close_intake() noexcept {
        queue_.close();  // the queue's own close bit orders every push before or after it
        sched_.close();
        life_.advance(phase::closed);
        pressure_.wake_all();
    }

    // ---------------------------------------------------------------- the worker loop

    // What a worker's thread runs (a copy of it lives in each thread).
    struct worker_entry {
        dispatcher* pool;
        void operator()(const std::stop_token& st, worker& w) const noexcept {
            pool->loop_.run(st, w);
        }
    };
    [[nodiscard]] worker_entry worker_body() noexcept { return worker_entry{this}; }

    // [D3] A worker became awake: the supervisor must come round to stamp its timed attempts.
    void note_worker_awake() noexcept { signal_.worker_woke(awake_period_ns_); }

    // ---------------------------------------------------------------- shutdown, step by step

    // The whole shutdown (docs/design.md, "Shutdown, step by step"); what it did not process goes
    // to `shut_.left` with its attempt history (the destructor dead-letters it; shutdown() hands
    // back the requests, `hand_back`: but those their handles cancelled go to on_failure). Out of
    // memory it throws std::bad_alloc (before the phase is `stopped`) with what it collected kept
    // in `shut_`, and a later call goes on from the step that threw: each collecting step takes
    // all it holds or nothing, and each other step runs once.
    shutdown_report<Request> shutdown_into(std::chrono::nanoseconds grace, bool hand_back) {
        shutdown_report<Request> report;
        if (detail::current_pool == this) {
            close_intake();
            report.deferred = true;
            return report;
        }
        std::lock_guard shutdown_lock(shutdown_mutex_);
        if (life_.at_least(phase::stopped)) {
            return report;
        }
        std::vector<envelope>& left = shut_.left;
        if (shut_.at == detail::shutdown_step::none) {
            shut_.grace_end =
                detail::add_saturated(detail::now_ns(), std::max<std::int64_t>(0, grace.count()));
            callbacks_.emit(event_now(event_kind::shutdown_begin, "shutdown", workers_.live()));
            // 1. Close intake: later submits return closed, blocked ones wake with closed.
            close_intake();
            life_.advance(phase::draining);
            shut_.at = detail::shutdown_step::begun;
        }
        if (shut_.at == detail::shutdown_step::begun) {
            // 2. Drain: retries are handed back (now and from here on), workers exit once the
            //    queue is empty; someone must drain a pool with no worker.
            delay_.close_into(left, pressure_);
            sched_.start_drain_into(left);  // what waits for a time, with its key's later ones
            idle_.wake_all();
            note_worker_awake();
            {
                std::lock_guard lock(workers_.mutex());
                if (workers_.live() == 0 && (queue_.has_claimed_elements() || !sched_.empty())) {
                    (void)workers_.spawn_locked(idle_, worker_body(), false);
                }
            }
            // 3. Wait out the grace; 4. then cancel what still runs.
            shut_.grace_over = !workers_.wait_exited_until(shut_.grace_end) && cancel_the_rest();
            // 5. Join the supervisor and the workers that exited; those still in a handler are
            //    stuck (one only on its way out is not).
            supervisor_.stop();
            {
                std::lock_guard lock(workers_.mutex());
                workers_.reap_exited_locked();
                shut_.stuck_workers = workers_.attempts_in_flight_locked();
            }
            shut_.before_drain = left.size();
            shut_.at = detail::shutdown_step::joined;
        }
        // 6. Hand back what is left in the queue, and what failed during shutdown.
        report.stuck_workers = shut_.stuck_workers;
        queue_.drain_into(left);
        sched_.drain_into(left);  // each key's requests in submit order
        report.drained = !shut_.grace_over && left.size() == shut_.before_drain;
        delay_.take_handed_back(left);
        if (hand_back) {
            // Room for the report first: from here on nothing throws, so a request is booked
            // handed back (its handle, [H1]) only when it is in the report.
            report.unprocessed.reserve(left.size());
            // User code runs here: as on a pool thread, a nested shutdown does not wait for us.
            const void* const caller = std::exchange(detail::current_pool, this);
            std::vector<envelope> cancelled = tracking_.hand_back(left, outcomes_.guarded());
            outcomes_.discard(cancelled);
            detail::current_pool = caller;
        }
        returned_.fetch_add(left.size(), std::memory_order_release);  // [H1] pairs with [H2]
        life_.advance(phase::stopped);
        idle_waiters_.notify();
        callbacks_.emit(event_now(event_kind::shutdown_done, "shutdown", workers_.live()));
        if (hand_back) {
            for (envelope& e : left) {
                report.unprocessed.push_back(std::move(e.request));  // reserved above
            }
            left.clear();
        }
        return report;
    }

    // Step 4: the grace is over while workers still run. Stops every running attempt, every
    // millisecond, until all workers exit or stuck_grace passes. Returns whether anything was
    // still queued or running (what `shutdown_grace_over` announces and `drained` denies);
    // workers that were only on their way out do not count.
    bool cancel_the_rest() noexcept {
        bool running = queue_.has_claimed_elements() || !sched_.empty();
        {
            std::lock_guard lock(workers_.mutex());
            running = running || workers_.attempts_in_flight_locked() != 0;
        }
        if (running) {
            callbacks_.emit(
                event_now(event_kind::shutdown_grace_over, "grace over", workers_.live()));
        }
        life_.advance(phase::cancelling);
        idle_.wake_all();
        note_worker_awake();
        const std::int64_t cancel_end = detail::add_saturated(
            detail::now_ns(), std::max<std::int64_t>(options_.stuck_grace.count(), 10'000'000));
        // An attempt stopped here that was not running when the grace ended had been popped but
        // not yet started; what is still queued is handed back, not run.
        const bool late =
            workers_.stop_attempts_until_exited(cancel_end, detail::stop_cause::shutdown) != 0 ||
            queue_.has_claimed_elements() || !sched_.empty();
        if (late && !running) {
            callbacks_.emit(
                event_now(event_kind::shutdown_grace_over, "grace over", workers_.live()));
        }
        return running || late;
    }

    // A constructor that failed half-way, and the end of the destructor, use the same steps:
    // close, cancel, stop the supervisor, join every worker.
    void stop_and_join_everything() noexcept {
        close_intake();
        life_.advance(phase::cancelling);
        idle_.wake_all();
        supervisor_.stop();
        workers_.join_all(idle_);
        life_.advance(phase::stopped);
    }

    // ---------------------------------------------------------------- idle waiting

    // Requests accepted and not yet ended; never under-estimates. Reads the ended counts first
    // and the accepted count last, so a request that ends meanwhile can only make it larger.
    [[nodiscard]] std::uint64_t outstanding() const {
        std::uint64_t ended = returned_.load(std::memory_order_acquire);  // [H2] pairs with [H1]
        {
            std::lock_guard lock(workers_.mutex());
            ended += workers_.ended_locked();
        }
        ended += outcomes_.discarded();  // see [H3]
        const std::uint64_t accepted = delay_.submitted(queue_) + sched_.accepted();
        return accepted > ended ? accepted - ended : 0;
    }

    // An event noticed now; `before` is the live worker count before what it reports.
    [[nodiscard]] event event_now(event_kind kind, const char* reason, std::size_t before,
                                  unsigned attempts = 0) const noexcept {
        return detail::callbacks::make(kind, reason, before, workers_.live(), queue_.approx_size(),
                                       attempts);
    }

    // ---------------------------------------------------------------- data

    const options<Request, Result> options_;
    const detail::erased_handler<Request, Result> handler_;
    queue_type queue_;
    detail::callbacks callbacks_;       // user code and events; see callbacks.hpp
    detail::lifecycle life_;            // the phase; see lifecycle.hpp
    detail::idle_stack<worker> idle_;   // sleeping workers; see idle_stack.hpp
    detail::back_pressure pressure_;    // who waits for room; see back_pressure.hpp
    detail::supervisor_signal signal_;  // the supervisor's sleep; see supervisor.hpp
    // A cancel of a request waiting in the delay queue or the scheduler kicks the supervisor
    // through it; before them, whose watched requests point at it.
    detail::cancel_inbox cancels_{signal_};
    detail::delay_queue<envelope> delay_{&cancels_};  // retries waiting; see delay_queue.hpp
    detail::scheduler<envelope> sched_;     // keys, lanes, times, rates, pause; see scheduler.hpp
    workers workers_;                       // the workers; see worker_set.hpp
    detail::idle_waiters idle_waiters_;     // threads in wait_idle; see idle_waiters.hpp
    const std::int64_t scale_interval_ns_;  // options_.scale_interval, saturated
    // While any worker is awake, the supervisor comes round this often (0: no default timeout).
    const std::int64_t awake_period_ns_;
    // The submit path: settings, the push, its wake-up decision, refusals; see intake.hpp.
    detail::intake<Request, queue_type, workers, options<Request, Result>> intake_;
    // The end of each attempt: success, retry, dead letter; see outcomes.hpp.
    detail::outcomes<Request, Result, worker_payload, queue_type> outcomes_;
    detail::tracking<Result> tracking_;  // the tracked requests' completions; see tracking.hpp
    // One attempt of one request: the handler call between the pop and the outcome.
    detail::attempt_runner<Request, Result, decltype(outcomes_)> runner_{
        handler_, outcomes_, signal_, detail::fenced_below(options_.default_timeout)};
    // What each worker's thread runs: pop or take, run, repeat; spin, then sleep.
    detail::worker_loop<envelope, worker_payload, queue_type, decltype(runner_),
                        options<Request, Result>>
        loop_{{this, options_, queue_, sched_, life_, pressure_, delay_, idle_, signal_, runner_,
               idle_waiters_, workers_, callbacks_, awake_period_ns_, std::random_device{}()}};

    std::atomic<std::uint64_t> returned_{0};    // requests handed back by shutdown; see [H1]
    std::mutex shutdown_mutex_;                 // serialises shutdowns
    detail::shutdown_progress<envelope> shut_;  // guarded by shutdown_mutex_
    // The supervisor's thread and round, over the components above; last: started after
    // everything above exists, stopped before any of it is destroyed. See supervisor_loop.hpp.
    detail::supervisor<envelope, worker_payload, queue_type, worker_entry> supervisor_;
};

}  // namespace workerpool
