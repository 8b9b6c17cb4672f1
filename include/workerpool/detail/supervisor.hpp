#pragma once

/// @file
/// The supervisor's own state and rules: when it sleeps and how it is kicked
/// (`detail::supervisor_signal`), the queue-wait estimate its scaling tick hands the policy
/// (`detail::wait_estimator`), its look at one worker's attempt (`detail::sweep_worker`,
/// `detail::attempt_wake`), and the arithmetic of its sleep (`detail::plan_wake`).

#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/completion.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <stop_token>

namespace workerpool::detail {

/// When the supervisor wakes, and what it tells the workers about it.
///
/// It publishes its planned wake-up (`next_wake`, read by a worker that schedules a retry) and
/// how long it will sleep (`horizon`, read by a worker that starts a timed attempt or wakes up:
/// [D1]/[D2] and [D3]), then sleeps on a condition variable until then or a kick.
///
/// Thread safety: `sleep_until`, `publish_*` and `count_wakeup` on the supervisor thread; the rest
/// from any thread.
class supervisor_signal {
public:
    /// Wakes the supervisor now (or makes its next sleep return at once).
    void kick() noexcept {
        {
            std::lock_guard lock(mutex_);
            kicked_ = true;
        }
        cv_.notify_one();
    }

    /// Sleeps until `wake_at_ns` (`never`: no end), a kick, or a stop request; then forgets the
    /// kick and that it rested (the round decides that anew).
    void sleep_until(std::int64_t wake_at_ns, const std::stop_token& st) noexcept {
        {
            std::unique_lock lock(mutex_);
            const auto woken = [&] { return kicked_ || st.stop_requested(); };
            if (wake_at_ns == std::numeric_limits<std::int64_t>::max()) {
                cv_.wait(lock, woken);
            } else {
                cv_.wait_until(lock, to_time_point(wake_at_ns), woken);
            }
            kicked_ = false;
        }
        // relaxed: a stale flag only costs a producer one needless kick
        resting_.store(false, std::memory_order_relaxed);
    }

    /// [D2] Publishes the planned wake-up and the horizon (how long from `now_ns`). seq_cst: the
    /// supervisor's side of [D1] and [D3] (publish, then look at the workers again); the
    /// planned wake-up pairs with `next_wake` through the delay queue's mutex.
    void publish(std::int64_t now_ns, std::int64_t wake_at_ns) noexcept {
        next_wake_ns_.store(wake_at_ns, std::memory_order_seq_cst);
        // [D2] [D3] the supervisor's store of its horizon, before it looks at the workers
        horizon_ns_.store(wake_at_ns - now_ns, std::memory_order_seq_cst);
    }

    /// The planned wake-up, for a worker deciding whether a retry it schedules needs a kick.
    [[nodiscard]] std::int64_t next_wake() const noexcept {
        return next_wake_ns_.load(std::memory_order_seq_cst);
    }

    /// Whether the supervisor plans to sleep longer than `period_ns` ([D3]: a worker just woke
    /// and may start timed attempts without a fence).
    [[nodiscard]] bool sleeps_longer_than(std::int64_t period_ns) const noexcept {
        return horizon_ns_.load(std::memory_order_seq_cst) > period_ns;
    }

    /// [D3] A worker just woke (its idle count's seq_cst decrement came first) and may start timed
    /// attempts without a fence: kicks the supervisor if it plans to sleep longer than the
    /// stamping cadence `awake_period_ns` (0: the pool has no default timeout; nothing to do).
    void worker_woke(std::int64_t awake_period_ns) noexcept {
        if (awake_period_ns != 0 && sleeps_longer_than(awake_period_ns)) {
            kick();
        }
    }

    /// Whether the supervisor sleeps too long to stamp an attempt with `timeout_ns` in time
    /// ([D1]'s reading side, after the attempt's seq_cst publication). It never sleeps past a
    /// tick, so the horizon is at most the scale interval, and stamp_period(timeout) < horizon
    /// reduces to this.
    [[nodiscard]] bool too_slow_for(std::int64_t timeout_ns) const noexcept {
        // [D2] the worker's load of the horizon, after [D1]'s store of its attempt
        const std::int64_t horizon = horizon_ns_.load(std::memory_order_seq_cst);
        return horizon > 1'000'000 && timeout_ns / 20 < horizon;
    }

    /// [K1] Marks the supervisor as resting: it plans no scaling tick, whatever else it may wake
    /// for, so whoever brings work must kick it. Returns false (and does not rest) if
    /// `has_work()`, asked after the flag is set, finds some already: a producer that claimed a
    /// slot before it could see the flag is seen here.
    template <class HasWork>
    bool rest(HasWork&& has_work) noexcept {
        // [K1] seq_cst: the supervisor's side (flag, then look at the queue)
        resting_.store(true, std::memory_order_seq_cst);
        if (has_work()) {
            resting_.store(false, std::memory_order_relaxed);  // nobody needs to kick us: no order
            return false;
        }
        return true;
    }

    /// [K1] The side of whoever brought work (a producer after its claim of a slot, a retry, a
    /// worker that counts again): whether the supervisor rests, in which case this call ends the
    /// rest and the caller must kick it (only one caller does).
    [[nodiscard]] bool take_resting() noexcept {
        // [K1] seq_cst load: a plain load on x86, on a line written only when the supervisor
        // rests or wakes
        return resting_.load(std::memory_order_seq_cst) &&
               resting_.exchange(false, std::memory_order_seq_cst);
    }

    /// Counts one wake-up (statistics).
    void count_wakeup() noexcept {
        wakeups_.fetch_add(1, std::memory_order_relaxed);  // statistics only; one writer
    }
    /// Wake-ups so far.
    [[nodiscard]] std::uint64_t wakeups() const noexcept {
        return wakeups_.load(std::memory_order_relaxed);  // statistics only
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool kicked_ = false;  // guarded by mutex_
    // Read by workers on their slow paths: a line of their own.
    alignas(cache_line) std::atomic<std::int64_t> next_wake_ns_{0};  // see publish
    std::atomic<std::int64_t> horizon_ns_{0};                        // see publish
    std::atomic<std::uint64_t> wakeups_{0};                          // statistics only
    std::atomic<bool> resting_{false};  // no scaling tick is planned; see [K1]
};

static_assert(alignof(supervisor_signal) == cache_line,
              "the supervisor's published plan, read by workers, starts a cache line");

/// Where a cancel of a request waiting in the scheduler (for a time, or behind its key) lands: it
/// sets a flag and kicks the supervisor, whose next pass takes such requests out
/// (`scheduler::purge_cancelled`). No sweep on a timer: an idle pool stays asleep.
///
/// Thread safety: `cancelled` from any thread (under the cancelled request's lock); `take` and
/// `again` on the supervisor's thread.
class cancel_inbox final : public cancel_listener {
public:
    /// Kicks `signal` on each cancel; `signal` outlives this object.
    explicit cancel_inbox(supervisor_signal& signal) noexcept : signal_(signal) {}

    void cancelled() noexcept override {
        pending_.store(true);  // seq_cst: see take()
        signal_.kick();
    }

    /// Whether a cancel came since the last call: the supervisor must purge. seq_cst: a cancel's
    /// state change (a seq_cst CAS) comes before its flag, and the purge reads the states after
    /// this, so a purge that follows a `true` sees every cancel that set it.
    [[nodiscard]] bool take() noexcept { return pending_.exchange(false); }

    /// The purge could not finish (out of memory): it must run again.
    void again() noexcept { pending_.store(true); }

private:
    supervisor_signal& signal_;
    std::atomic<bool> pending_{false};  // a cancel came since the last take()
};

/// The queue wait of a request arriving now, by Little's law: the depth divided by the dequeue
/// rate since the last progress; if nothing was dequeued while requests waited, the time since the
/// last dequeue. Zero when the queue is empty. Supervisor only.
class wait_estimator {
public:
    /// Starts counting at `now_ns`, with `popped` pops so far.
    wait_estimator(std::uint64_t popped, std::int64_t now_ns) noexcept
        : last_popped_(popped), last_progress_ns_(now_ns) {}

    /// The estimate at `now_ns`, given the queue's `depth` and the pops so far.
    std::chrono::nanoseconds estimate(std::int64_t now_ns, std::size_t depth,
                                      std::uint64_t popped) noexcept {
        std::chrono::nanoseconds wait{0};
        if (popped != last_popped_) {
            const auto window = std::max<std::int64_t>(1, now_ns - last_progress_ns_);
            wait = std::chrono::nanoseconds(
                static_cast<std::int64_t>(static_cast<double>(depth) * static_cast<double>(window) /
                                          static_cast<double>(popped - last_popped_)));
            last_popped_ = popped;
            last_progress_ns_ = now_ns;
        } else if (depth > 0) {
            wait = std::chrono::nanoseconds(now_ns - last_progress_ns_);
        } else {
            last_progress_ns_ = now_ns;
        }
        return wait;
    }

private:
    std::uint64_t last_popped_;
    std::int64_t last_progress_ns_;
};

/// What the supervisor's look at one worker found.
struct sweep_step {
    std::int64_t next = never;  ///< when to look at this worker again
    bool timed_out = false;     ///< its attempt's deadline passed: this look stopped it
    bool stuck = false;         ///< stopped (a deadline, a cancel) `grace` ago, still running
};

/// Looks at worker `w` at `now_ns`: stamps a new timed attempt, stops an overdue one, and tells
/// whether an attempt stopped by its deadline, or by its request's cancel, has run on past
/// `grace_ns` since (the caller declares the worker stuck). `Worker` has `attempt`, and `stuck`,
/// `retiring`, `stopped_at_ns` guarded by the worker set's mutex, which the caller holds.
template <class Worker>
sweep_step sweep_worker(Worker& w, std::int64_t now_ns, std::int64_t grace_ns,
                        std::int64_t interval_ns) noexcept {
    sweep_step step;
    const attempt_view v = w.attempt.stamp(now_ns);
    if (v.kind == attempt_view::state::deadline) {
        // Come back soon enough to stamp the next attempts of this kind in time.
        step.next = add_saturated(now_ns, stamp_period(w.attempt.timeout_ns(), interval_ns));
        if (v.deadline_ns > now_ns) {
            step.next = std::min(step.next, v.deadline_ns);
        } else if (w.attempt.try_stop(v, stop_cause::deadline)) {
            w.stopped_at_ns = now_ns;
            step.timed_out = true;
            step.next = std::min(step.next, add_saturated(now_ns, grace_ns));
        }
    } else if (v.kind == attempt_view::state::stopped && !w.stuck && !w.retiring) {
        const stop_cause cause = w.attempt.cause();
        const std::int64_t since = cause == stop_cause::deadline    ? w.stopped_at_ns
                                   : cause == stop_cause::cancelled ? w.attempt.stopped_ns()
                                                                    : 0;
        if (since == 0) {
            return step;
        }
        if (now_ns - since >= grace_ns) {
            step.stuck = true;
        } else {
            step.next = add_saturated(since, grace_ns);
        }
    }
    return step;
}

/// When the supervisor must come back for worker `w`'s attempt, judged by a seq_cst look ([D2],
/// after `supervisor_signal::publish`): at its deadline; or, for an attempt that started after
/// the sweep read its slot (so at `now_ns` or later), within its stamp period.
template <class Worker>
[[nodiscard]] std::int64_t attempt_wake(const Worker& w, std::int64_t now_ns,
                                        std::int64_t interval_ns) noexcept {
    // [D1] the supervisor's look at the word, after [D2]'s store of its horizon
    const attempt_view v = w.attempt.look(std::memory_order_seq_cst);
    if (v.kind == attempt_view::state::deadline) {
        return v.deadline_ns;
    }
    if (v.kind == attempt_view::state::unstamped) {
        // Going round at once instead made a busy pool loop as fast as attempts started.
        return add_saturated(now_ns, stamp_period(w.attempt.timeout_ns(), interval_ns));
    }
    return never;
}

/// The earliest of the supervisor's reasons to wake, each a steady-clock time (`never`: none):
/// the next scale tick, what the sweep asked for, what the attempts need, the delay queue's next
/// due request, and — while a worker that is not stuck is awake — the stamping cadence
/// (`awake_period_ns` after `now_ns`; 0 when the pool has no default timeout).
struct wake_reasons {
    std::int64_t now_ns = 0;
    std::int64_t tick = never;
    std::int64_t sweep = never;
    std::int64_t attempts = never;
    std::int64_t retries = never;
    std::int64_t awake_period_ns = 0;
    bool worker_awake = false;
};

/// The supervisor's wake-up time: the earliest of `r`'s reasons. Pure.
[[nodiscard]] constexpr std::int64_t plan_wake(const wake_reasons& r) noexcept {
    std::int64_t at = std::min({r.tick, r.sweep, r.attempts, r.retries});
    if (r.awake_period_ns != 0 && r.worker_awake) {
        at = std::min(at, add_saturated(r.now_ns, r.awake_period_ns));
    }
    return at;
}

}  // namespace workerpool::detail
