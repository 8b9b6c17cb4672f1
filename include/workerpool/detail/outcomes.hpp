#pragma once

/// @file
/// `detail::outcomes<...>`: what happens to a request once its attempt has ended — a success
/// counted and reported, a failure retried after its backoff or handed to `on_failure` — the last
/// step of the worker loop.

#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/detail/callbacks.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/counters.hpp>
#include <workerpool/detail/delay_queue.hpp>
#include <workerpool/detail/failure_sink.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/detail/scheduled_item.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/detail/supervisor.hpp>
#include <workerpool/detail/tracking.hpp>
#include <workerpool/detail/worker_set.hpp>
#include <workerpool/options.hpp>
#include <workerpool/retry.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <random>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// Reports the end of each attempt: counts it in the worker's counters (the `completed` and
/// `failed` bumps come last, [C1], so that `wait_idle` sees the whole outcome), calls
/// `on_success`, decides a retry (`retry_if`, attempts left, the request's expiry) and puts it in
/// the delay queue, or hands the request to `on_failure`; and ends a tracked request's
/// completion (`settle`) once its outcome is decided: a request its handle cancelled ends as
/// failed, reason `cancelled`, whatever its handler did. Its parts outlive it.
///
/// Thread safety: `ended`, `succeeded`, `failed`, `expired` on the worker that owns `w`;
/// `discard` and `deliver_cancelled` on one thread at a time (the supervisor while it runs; the
/// destructor, or shutdown under its lock, once it stopped).
template <class Request, class Result, class Payload, class Queue>
class outcomes final : public cancelled_sink<envelope<Request>> {
public:
    /// The request with its bookkeeping.
    using envelope = detail::envelope<Request>;
    /// The worker set's slot type; its `Payload` has room `failing` for a failure record.
    using worker = typename worker_set<Payload>::slot;

    /// The components an outcome touches.
    struct parts {
        const options<Request, Result>& opts;
        callbacks& calls;
        delay_queue<envelope>& delay;
        scheduler<envelope>& sched;  // retries of the requests that came from it
        const lifecycle& life;
        supervisor_signal& signal;
        worker_set<Payload>& workers;
        idle_stack<worker>& idle;
        const Queue& queue;            // for the events' queue depth
        std::int64_t awake_period_ns;  // the supervisor's stamping cadence; 0: none ([D3])
    };

    /// Reports into `p`. Throws: `std::bad_alloc` (see failure_sink).
    explicit outcomes(parts p) : p_(p), sink_(p.opts.on_failure, p.calls) {}

    /// Ends `w`'s attempt; returns why its token was stopped. A worker that was stuck counts
    /// again (the supervisor must come round to stamp it, [D3]), or retires when its replacement
    /// still runs.
    stop_cause ended(worker& w) noexcept {
        const stop_cause cause = w.attempt.end();
        if (cause != stop_cause::none) [[unlikely]] {
            stopped_attempt_ended(w);
        }
        return cause;
    }

    /// The handler returned; `cause` says whether a deadline had stopped its token (a late
    /// success).
    /// The result, if any, is in `w.payload.result`. `Tracked`: `e.ticket` is not null.
    template <bool Tracked>
    void succeeded(worker& w, envelope& e, stop_cause cause) noexcept {
        if (Tracked && !e.ticket->begin_final()) {
            drop_result(w);
            cancelled(w, e);  // cancelled while it ran: the handler ignored its token
            return;
        }
        if (cause == stop_cause::deadline) {
            w.counters.bump(counter::late);
        }
        if (p_.opts.on_success) {
            if constexpr (std::is_void_v<Result>) {
                p_.calls.guard(p_.opts.on_success, e.request);
            } else {
                p_.calls.guard(p_.opts.on_success, e.request, *w.payload.result.value);
            }
        }
        if constexpr (Tracked) {
            if constexpr (!std::is_void_v<Result>) {
                static_cast<completion<Result>&>(*e.ticket).set_value(
                    std::move(*w.payload.result.value));
            }
            settle(*e.ticket, request_state::succeeded, failure_reason::error, e.attempts, nullptr,
                   guarded());
        }
        drop_result(w);
        w.counters.bump(counter::completed);  // [C1] last: the outcome is published
    }

    /// A tracked request its handle cancelled while it waited: it ends without running.
    void cancelled_before_start(worker& w, envelope& e) noexcept { cancelled(w, e); }

    /// The handler threw `e.last_error`; `cause` says why its token was stopped, if it was.
    void failed(worker& w, envelope& e, stop_cause cause, std::minstd_rand& rng) noexcept {
        if (cause == stop_cause::shutdown || cause == stop_cause::cancelled) {
            cancelled(w, e);
            return;
        }
        const bool timed_out = cause == stop_cause::deadline;
        if (timed_out) {
            w.counters.bump(counter::timed_out);
        }
        if (e.attempts < e.max_attempts && should_retry(e.last_error, e.attempts)) {
            if (e.ticket != nullptr && !e.ticket->to_retry_wait(e.attempts, e.last_error)) {
                cancelled(w, e);  // its handle cancelled it after the handler returned
                return;
            }
            retry(w, e, rng);
        } else {
            dead_letter(w, e, timed_out ? failure_reason::timed_out : failure_reason::error);
        }
    }

    /// The request's expiry passed before it could run (again).
    void expired(worker& w, envelope& e) noexcept {
        w.counters.bump(counter::expired);
        dead_letter(w, e, failure_reason::expired);
    }

    /// For requests the destructor must discard, tracked ones shutdown found cancelled by their
    /// handles, and those the supervisor's purge took out: `on_failure` as `cancelled`, counted
    /// failed.
    void discard(std::vector<envelope>& left) noexcept {
        sink_.deliver_unowned(
            left,
            [this](envelope& e) {
                p_.calls.emit(event_of(event_kind::dead_letter, "cancelled", e.attempts));
            },
            [this](envelope& e) {
                if (e.ticket != nullptr) {
                    (void)e.ticket->begin_final();  // its handle may have cancelled it already
                    settle(*e.ticket, request_state::cancelled, failure_reason::cancelled,
                           e.attempts, e.last_error, guarded());
                    e.ticket = nullptr;
                }
            });
    }

    /// Requests the scheduler let go because their handles cancelled them while they waited (the
    /// supervisor's purge): `on_failure` as `cancelled`, counted failed and cancelled.
    void deliver_cancelled(std::vector<envelope>& purged) noexcept override {
        const std::size_t n = purged.size();
        discard(purged);
        // After the failed count: `stats()` never shows one cancelled that is not yet failed.
        purged_.fetch_add(n, std::memory_order_relaxed);  // statistics only
    }

    /// Requests `deliver_cancelled` ended so far.
    [[nodiscard]] std::uint64_t purged() const noexcept {
        return purged_.load(std::memory_order_relaxed);  // statistics only
    }

    /// Runs user code resumed by a request's end (a coroutine) as a callback would run: what it
    /// throws is counted in `callback_errors`.
    [[nodiscard]] auto guarded() noexcept {
        return [this](auto&& f) { (void)p_.calls.guard(f); };
    }

    /// Requests discarded so far (they count as failed).
    [[nodiscard]] std::uint64_t discarded() const noexcept { return sink_.unowned(); }

private:
    // `ended` for an attempt whose token was stopped: a worker that was stuck counts again, or
    // retires. Out of line: no attempt of a healthy pool comes here, and inlined into `ended` it
    // made the worker loop call `ended` instead of inlining it.
    [[gnu::noinline]] void stopped_attempt_ended(worker& w) noexcept {
        const std::size_t before = p_.workers.live();
        const recovery r = p_.workers.note_returned(w, p_.idle);
        if (r == recovery::none) {
            return;
        }
        p_.calls.emit(event_of(event_kind::worker_recovered, "handler returned", 0, before));
        if (r == recovery::surplus) {
            p_.calls.emit(
                event_of(event_kind::scale_down, "stuck worker recovered, surplus", 0, before));
        } else {
            p_.signal.worker_woke(p_.awake_period_ns);
            if (p_.signal.take_resting()) {
                p_.signal.kick();  // one more serving worker: maybe one to shed ([K1])
            }
        }
    }

    [[nodiscard]] bool should_retry(const std::exception_ptr& error, unsigned attempts) noexcept {
        if (!p_.opts.retry.retry_if) {
            return default_retry_if(error);
        }
        return p_.calls.guard_or(false, p_.opts.retry.retry_if, error, attempts);
    }

    void retry(worker& w, envelope& e, std::minstd_rand& rng) noexcept {
        const double unit = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        const auto requested = requested_retry_delay(e.last_error);  // a retry_after's delay
        const auto delay = retry_delay(p_.opts.retry, e.attempts, unit, requested);
        const std::int64_t due = add_saturated(now_ns(), delay.count());
        if (e.expires_ns != 0 && due >= e.expires_ns) {
            expired(w, e);  // a retry never waits past the request's expiry
            return;
        }
        const char* const why = requested ? "retry_after" : "handler threw";
        if (w.payload.turn.scheduled) {
            retry_scheduled(w, e, due, why);
            return;
        }
        const unsigned attempts = e.attempts;
        using scheduled = typename delay_queue<envelope>::scheduled;
        scheduled s{};
        try {
            s = p_.delay.schedule(due, std::move(e), p_.life);
        } catch (...) {
            dead_letter(w, e, failure_reason::error);  // out of memory for the delay queue
            return;
        }
        if (s == scheduled::handed_back) {
            return;  // shutdown began: it goes back unprocessed
        }
        p_.calls.emit(event_of(event_kind::retry_scheduled, why, attempts));
        // The supervisor publishes its wake-up time before it reads the delay queue under its
        // mutex, so either it sees this entry or we see its time here. While due retries wait
        // for room, the pops release this one too.
        // A resting supervisor plans no tick: a retry is load for the scaler ([K1], through the
        // delay queue's mutex).
        if (p_.signal.take_resting() || (s == scheduled::queued && due < p_.signal.next_wake())) {
            p_.signal.kick();
        }
    }

    // A retry of a request from the scheduler waits there, its key still held (so the key's next
    // request waits until this one has ended).
    void retry_scheduled(worker& w, envelope& e, std::int64_t due, const char* why) noexcept {
        const unsigned attempts = e.attempts;
        bool kept = false;
        try {
            kept = p_.sched.retry(due, std::move(e), w.payload.turn);
        } catch (...) {
            dead_letter(w, e, failure_reason::error);  // out of memory: it ends, its key moves on
            return;
        }
        w.payload.turn.retried = true;  // it is the scheduler's (or the shutdown report's) now
        if (!kept) {
            return;  // shutdown began: it goes back unprocessed, before its key's later requests
        }
        p_.calls.emit(event_of(event_kind::retry_scheduled, why, attempts));
        if (p_.signal.take_resting() || due < p_.signal.next_wake()) {
            p_.signal.kick();  // see retry()
        }
    }

    // Cancelled by shutdown or by its handle: counted, then to `on_failure`.
    void cancelled(worker& w, envelope& e) noexcept {
        w.counters.bump(counter::cancelled);
        dead_letter(w, e, failure_reason::cancelled);
    }

    void dead_letter(worker& w, envelope& e, failure_reason reason) noexcept {
        request_state end =
            reason == failure_reason::cancelled ? request_state::cancelled : request_state::failed;
        if (e.ticket != nullptr && !e.ticket->begin_final()) {
            reason = failure_reason::cancelled;  // its handle cancelled it first
            end = request_state::cancelled;
        }
        p_.calls.emit(event_of(event_kind::dead_letter, to_string(reason), e.attempts));
        sink_.deliver(w.payload.failing, std::move(e.request), reason, e.attempts, e.last_error);
        if (e.ticket != nullptr) {
            settle(*e.ticket, end, reason, e.attempts, e.last_error, guarded());
        }
        w.counters.bump(counter::failed);  // [C1] after on_failure: wait_idle sees it ran
    }

    static void drop_result(worker& w) noexcept {
        if constexpr (!std::is_void_v<Result>) {
            w.payload.result.value.reset();
        }
    }

    [[nodiscard]] event event_of(event_kind kind, const char* reason, unsigned attempts,
                                 std::optional<std::size_t> before = std::nullopt) const noexcept {
        const std::size_t live = p_.workers.live();
        return callbacks::make(kind, reason, before.value_or(live), live, p_.queue.approx_size(),
                               attempts);
    }

    parts p_;
    failure_sink<Request> sink_;
    std::atomic<std::uint64_t> purged_{0};  // see deliver_cancelled
};

}  // namespace workerpool::detail
