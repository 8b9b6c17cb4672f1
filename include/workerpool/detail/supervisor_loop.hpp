#pragma once

/// @file
/// `detail::supervisor<...>`: the supervisor thread's round — reap exited workers, sweep the
/// attempts (stamp, stop, declare stuck), run the scaling tick, release due retries, plan the
/// sleep — over the components it is handed.

#include <workerpool/detail/callbacks.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/delay_queue.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/detail/pool_thread.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/detail/supervisor.hpp>
#include <workerpool/detail/worker_set.hpp>
#include <workerpool/scaler.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// The supervisor: its thread and its round. It owns the thread, the scaling policy and the
/// tick's state; everything else it touches belongs to the components in `parts`, which outlive
/// it. `Body` is what a started worker's thread runs. Thread safety: `start` and `stop` from one
/// thread at a time; the round runs on the supervisor's own thread.
template <class Envelope, class Payload, class Queue, class Body>
class supervisor {
public:
    /// The worker set's slot type.
    using worker = typename worker_set<Payload>::slot;

    /// The components the round works on.
    struct parts {
        const void* pool;  // the dispatcher, for self-call detection (detail::current_pool)
        worker_set<Payload>& workers;
        idle_stack<worker>& idle;
        Queue& queue;
        delay_queue<Envelope>& delay;
        scheduler<Envelope>& sched;
        back_pressure& pressure;
        callbacks& calls;
        const lifecycle& life;
        supervisor_signal& signal;
        cancel_inbox& cancels;             // set by a cancel of a request the scheduler holds
        cancelled_sink<Envelope>& purged;  // ends what purge_cancelled took out
    };

    /// The pool's settings the round needs, in nanoseconds (saturated).
    struct settings {
        std::int64_t stuck_grace_ns = 0;
        std::int64_t keep_alive_ns = 0;
        std::int64_t interval_ns = 0;
        std::int64_t awake_period_ns = 0;  // the stamping cadence while workers are awake; 0: none
        // The policy is a built-in one, whose answer cannot change while the pool is at rest (see
        // at_rest_locked): the supervisor may then stop ticking. A custom policy may decide on
        // time alone, so it is asked every tick.
        bool policy_rests = false;
    };

    /// A round over `p` with `s`; `policy` decides the worker count, `body` runs new workers.
    supervisor(parts p, settings s, scale_policy policy, Body body) noexcept
        : p_(p), s_(s), policy_(std::move(policy)), body_(body) {}

    supervisor(const supervisor&) = delete;
    supervisor& operator=(const supervisor&) = delete;
    supervisor(supervisor&&) = delete;
    supervisor& operator=(supervisor&&) = delete;
    ~supervisor() { stop(); }

    /// Starts the supervisor thread. Throws: `std::system_error`, `std::bad_alloc`.
    void start() {
        thread_ = std::jthread([this](const std::stop_token& st) { run(st); });
    }

    /// Stops the supervisor thread and joins it; idempotent.
    void stop() noexcept {
        thread_.request_stop();  // before the kick: the round looks at its stop token after it
        p_.signal.kick();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

private:
    // Runs rounds until `st` is stopped (and the supervisor kicked).
    void run(const std::stop_token& st) noexcept {
        current_pool = p_.pool;  // callbacks run here too: self-calls are detected
        name_this_thread(std::nullopt);
        std::int64_t next_tick = now_ns();
        wait_estimator estimator(p_.queue.pushed_count() - p_.queue.approx_size(), next_tick);
        while (!st.stop_requested()) {
            p_.signal.count_wakeup();
            const std::int64_t now = now_ns();
            wake_reasons why;
            why.now_ns = now;
            why.awake_period_ns = s_.awake_period_ns;
            {
                std::lock_guard lock(p_.workers.mutex());
                p_.workers.reap_exited_locked();
                p_.workers.rotate_latency_window_locked(now);
                why.sweep = sweep_locked(now);
                if (next_tick == never && !at_rest_locked()) {
                    // Work came (a kick, or something else woke us): tick again, and estimate
                    // the queue wait from now, not over the time at rest.
                    next_tick = now;
                    estimator =
                        wait_estimator(p_.queue.pushed_count() - p_.queue.approx_size(), now);
                }
                if (now >= next_tick) {
                    const std::size_t depth = p_.queue.approx_size();
                    scale_locked(now, depth,
                                 estimator.estimate(now, depth, p_.queue.pushed_count() - depth));
                    // At rest the policy's answer cannot change until work comes: no tick.
                    next_tick = at_rest_locked() ? never : add_saturated(now, s_.interval_ns);
                } else if (p_.workers.live() == 0 &&
                           (p_.queue.has_claimed_elements() || p_.sched.has_ready()) &&
                           !p_.life.at_least(phase::closed)) {
                    (void)p_.workers.spawn_locked(p_.idle, body_, true);  // a submit kicked us
                }
                why.tick = next_tick;
            }
            p_.calls.flush();
            const auto released = p_.delay.release_due(now, p_.queue, p_.pressure);
            const auto due = p_.sched.release_due(now);  // not_before, tokens, keyed retries
            const auto purged = purge_cancelled(now);
            const std::size_t ready = released.pushed + due.ready + purged.ready;
            if (p_.idle.wake_up_to(ready) != 0) {  // [W1] as after a push
                p_.signal.worker_woke(s_.awake_period_ns);
            }
            why.retries = std::min({released.next_due, due.next_due, purged.next_due});
            if (ready != 0 && p_.workers.live() == 0) {
                why.retries = now;  // nobody to wake (min_workers == 0): start one next round
            }
            std::int64_t wake_at = plan_sleep(why);
            // At rest (no tick planned, whatever else the sleep waits for): whoever brings work
            // must kick us. Work that came while we decided is seen here ([K1]), and so is a
            // manual change of the workers or their limits made after the decision (it saw no
            // flag: it changed under the worker set's lock, then looked, so it ran before this).
            if (next_tick == never && !p_.signal.rest([this] {
                    if (p_.queue.has_claimed_elements() || !p_.delay.empty() ||
                        p_.sched.ready() != 0) {
                        return true;
                    }
                    std::lock_guard lock(p_.workers.mutex());
                    return !at_rest_locked();
                })) {
                wake_at = now;
            }
            p_.signal.sleep_until(wake_at, st);
        }
    }

    // A cancel kicked us: the requests whose handles cancelled them while they waited in the
    // scheduler or the delay queue leave now, to `on_failure` (on this thread), and their keys
    // move on.
    typename scheduler<Envelope>::released purge_cancelled(std::int64_t now) noexcept {
        typename scheduler<Envelope>::released r;
        if (!p_.cancels.take()) {
            return r;
        }
        r = p_.sched.purge_cancelled(now, purged_);
        r.more = !p_.delay.purge_cancelled(purged_) || r.more;
        if (r.more) {
            p_.cancels.again();  // out of memory: try again in a while
            r.next_due =
                std::min(r.next_due, add_saturated(now, scheduler<Envelope>::no_memory_retry_ns));
        }
        if (!purged_.empty()) {
            p_.purged.deliver_cancelled(purged_);
            purged_.clear();
            if (p_.life.at_least(phase::draining) && p_.sched.empty()) {
                p_.idle.wake_all();  // the draining workers that wait for the scheduler may leave
            }
        }
        return r;
    }

    // Whether the pool is at rest: a built-in policy, nothing queued, ready in the scheduler or
    // waiting to retry in the delay queue, and no worker above min_workers (nothing for the policy
    // or the keep-alive to shed). Its answer then stays the same until work comes, and work kicks a
    // resting supervisor (see [K1]). What the scheduler holds for a time wakes it at that time
    // (`next_wake`), not every tick. Pre: the worker set's lock.
    [[nodiscard]] bool at_rest_locked() const noexcept {
        return s_.policy_rests && p_.queue.approx_size() == 0 && p_.delay.pending() == 0 &&
               p_.sched.ready() == 0 && p_.workers.serving_locked() <= p_.workers.min_locked();
    }

    // [D2] Publishes when the supervisor will wake, then looks again at what workers publish
    // without a lock (attempts, whether any worker is awake), so that a deadline or a stamp that
    // is due earlier is never slept through; the delay queue is read under its mutex after the
    // publication (a worker scheduling a retry reads the wake-up time after its insertion).
    std::int64_t plan_sleep(wake_reasons why) noexcept {
        const std::int64_t first = plan_wake(why);
        p_.signal.publish(why.now_ns, first);
        {
            std::lock_guard lock(p_.workers.mutex());
            p_.workers.for_each_locked([&](const worker& w) {
                why.attempts = std::min(why.attempts, attempt_wake(w, why.now_ns, s_.interval_ns));
            });
            // [D3] A stuck worker starts no attempt: only the others need stamping rounds.
            why.worker_awake =
                p_.workers.slots_locked() - p_.workers.stuck_locked() > p_.idle.count();
        }
        why.retries =
            std::min({why.retries, p_.delay.next_wake(p_.queue.is_closed()), p_.sched.next_wake()});
        const std::int64_t planned = plan_wake(why);
        if (planned != first) {
            p_.signal.publish(why.now_ns, planned);
        }
        return planned;
    }

    // Stamps new timed attempts, stops overdue ones, declares stuck workers (starting
    // replacements); returns when it must look again. Pre: the worker set's lock.
    std::int64_t sweep_locked(std::int64_t now) noexcept {
        std::int64_t next = never;
        // By index: a replacement for a stuck worker grows the set.
        for (std::size_t i = 0; i < p_.workers.slots_locked(); ++i) {
            worker& w = p_.workers.at_locked(i);
            const sweep_step step = sweep_worker(w, now, s_.stuck_grace_ns, s_.interval_ns);
            next = std::min(next, step.next);
            if (step.timed_out) {
                defer(event_kind::attempt_timed_out, "deadline", p_.workers.live());
            }
            if (step.stuck) {
                const std::size_t before = p_.workers.live();
                defer(event_kind::worker_stuck, "deadline + stuck grace", before);
                // A stuck worker is lost capacity, not load: replace it at once.
                if (p_.workers.declare_stuck_locked(w, p_.idle, body_,
                                                    !p_.life.at_least(phase::closed))) {
                    defer(event_kind::scale_up, "replace stuck worker", before);
                }
            }
        }
        return next;
    }

    // The scaling tick: the policy's target, and every idle worker past its keep-alive.
    // Pre: the worker set's lock.
    void scale_locked(std::int64_t now, std::size_t depth, std::chrono::nanoseconds wait) noexcept {
        if (p_.life.at_least(phase::closed)) {
            return;
        }
        std::vector<worker*> expired;  // allocates only when some are past their keep-alive
        std::size_t idle = 0;
        try {
            idle = p_.idle.listed_before(now - s_.keep_alive_ns, expired);
        } catch (...) {
            idle = p_.idle.approx_count();  // out of memory: no keep-alive this tick
        }
        const std::size_t serving = p_.workers.serving_locked();
        scale_metrics m;
        m.now = to_time_point(now);
        // Requests held by a pause, a time or a token are not backlog to grow for.
        m.queue_depth = p_.sched.paused() ? 0 : depth + p_.delay.pending() + p_.sched.ready();
        m.workers = serving;
        m.idle_workers = std::min(idle, serving);
        m.busy_workers = serving - m.idle_workers;
        m.min_workers = p_.workers.min_locked();
        m.max_workers = p_.workers.max_locked();
        m.queue_wait = wait;
        std::size_t target = p_.calls.guard_or(serving, policy_, m);
        target = std::clamp(target, m.min_workers, m.max_workers);
        if (target == 0 && m.queue_depth > 0) {
            target = 1;  // min_workers == 0: someone must serve a non-empty queue
        }
        const std::size_t before = p_.workers.live();
        if (target > serving) {
            if (p_.workers.grow_locked(target, p_.idle, body_) > 0) {
                defer(event_kind::scale_up, "backlog", before);
            }
            return;
        }
        // Keep-alive first, whatever the policy wants (short of growth): every idle worker past
        // its time retires now, down to min_workers, not one per tick behind a shrinking policy.
        std::size_t retired = 0;
        for (worker* w : expired) {
            if (p_.workers.serving_locked() > m.min_workers && !w->retiring) {
                p_.workers.retire_locked(*w, p_.idle);
                ++retired;
            }
        }
        if (retired > 0) {
            defer(event_kind::scale_down, "idle keep-alive", before);
        }
        const std::size_t after_keep_alive = p_.workers.live();
        if (p_.workers.shrink_locked(target, p_.idle) > 0) {
            defer(event_kind::scale_down, "quiet", after_keep_alive);
        }
    }

    // Keeps an event found under the worker set's lock for delivery after it.
    void defer(event_kind kind, const char* reason, std::size_t before) noexcept {
        p_.calls.defer(
            callbacks::make(kind, reason, before, p_.workers.live(), p_.queue.approx_size()));
    }

    parts p_;
    settings s_;
    scale_policy policy_;
    Body body_;
    std::vector<Envelope> purged_;  // supervisor thread only: what purge_cancelled took out
    std::jthread thread_;           // last: stopped and joined before the rest is destroyed
};

}  // namespace workerpool::detail
