// The supervisor's rules, without threads (issue 15, item 5): its wake-up plan, the queue-wait
// estimate it gives the policy, its look at one worker (stamp, stop, stuck), and its signal.

#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/detail/supervisor.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <cstdint>
#include <limits>
#include <stop_token>

namespace {

using namespace std::chrono_literals;
using workerpool::detail::attempt_slot;
using workerpool::detail::attempt_view;
using workerpool::detail::never;
using workerpool::detail::plan_wake;
using workerpool::detail::stop_cause;
using workerpool::detail::supervisor_signal;
using workerpool::detail::sweep_worker;
using workerpool::detail::wait_estimator;
using workerpool::detail::wake_reasons;

constexpr std::int64_t ms = 1'000'000;

// What sweep_worker and attempt_wake look at in a worker slot.
struct fake_worker {
    attempt_slot attempt;
    bool stuck = false;
    bool retiring = false;
    std::int64_t stopped_at_ns = 0;
};

}  // namespace

TEST_CASE("plan_wake takes the earliest reason, and the stamping cadence only while a worker is "
          "awake",
          "[supervisor][unit]") {
    wake_reasons r;
    r.now_ns = 1000 * ms;
    r.tick = 1050 * ms;
    CHECK(plan_wake(r) == 1050 * ms);  // nothing else pending: the next tick
    r.sweep = 1030 * ms;
    CHECK(plan_wake(r) == 1030 * ms);
    r.retries = 1010 * ms;
    CHECK(plan_wake(r) == 1010 * ms);
    r.attempts = 1005 * ms;
    CHECK(plan_wake(r) == 1005 * ms);
    r.awake_period_ns = 1 * ms;
    CHECK(plan_wake(r) == 1005 * ms);  // no worker awake: no cadence
    r.worker_awake = true;
    CHECK(plan_wake(r) == 1001 * ms);
    r.awake_period_ns = 0;  // a pool without a default timeout has no cadence
    CHECK(plan_wake(r) == 1005 * ms);
    r.awake_period_ns = std::numeric_limits<std::int64_t>::max();  // saturates, no overflow
    CHECK(plan_wake(r) == 1005 * ms);

    wake_reasons idle;
    idle.now_ns = 5 * ms;
    CHECK(plan_wake(idle) == never);  // no tick planned and nothing pending: sleep until kicked
}

TEST_CASE("wait_estimator applies Little's law over the time since the last progress",
          "[supervisor][scaling][unit]") {
    wait_estimator est(0, 0);
    // 100 pops in 1 s with 50 waiting: 0.5 s.
    CHECK(est.estimate(1000 * ms, 50, 100) == 500ms);
    // No pop for 200 ms with requests waiting: the time since the last pop.
    CHECK(est.estimate(1200 * ms, 10, 100) == 200ms);
    // An empty queue waits nothing and restarts the clock.
    CHECK(est.estimate(1300 * ms, 0, 100) == 0ns);
    CHECK(est.estimate(1400 * ms, 5, 100) == 100ms);
}

TEST_CASE("sweep_worker stamps, stops at the deadline, and declares stuck after the grace",
          "[supervisor][stuck][unit]") {
    fake_worker w;
    const std::int64_t grace = 30 * ms;
    const std::int64_t interval = 50 * ms;
    w.attempt.begin_timed(20 * ms, false);

    auto step = sweep_worker(w, 100 * ms, grace, interval);  // stamps 120 ms
    CHECK_FALSE(step.timed_out);
    CHECK(step.next == 101 * ms);  // the stamp period (1 ms) is sooner than the deadline
    CHECK(w.attempt.look(std::memory_order_acquire).deadline_ns == 120 * ms);

    step = sweep_worker(w, 119 * ms, grace, interval);
    CHECK_FALSE(step.timed_out);
    CHECK(step.next == 120 * ms);

    step = sweep_worker(w, 121 * ms, grace, interval);
    CHECK(step.timed_out);
    CHECK(w.attempt.token().stop_requested());
    CHECK(w.attempt.cause() == stop_cause::deadline);
    CHECK(w.stopped_at_ns == 121 * ms);
    CHECK(step.next == 122 * ms);

    step = sweep_worker(w, 140 * ms, grace, interval);  // still running, grace not over
    CHECK_FALSE(step.stuck);
    CHECK(step.next == 151 * ms);

    step = sweep_worker(w, 151 * ms, grace, interval);
    CHECK(step.stuck);

    w.stuck = true;  // what the caller does; a stuck worker is not declared again
    step = sweep_worker(w, 200 * ms, grace, interval);
    CHECK_FALSE(step.stuck);
    CHECK(step.next == never);
    CHECK(w.attempt.end() == stop_cause::deadline);
}

TEST_CASE("sweep_worker never declares a retiring worker or a shutdown-stopped one stuck",
          "[supervisor][stuck][unit]") {
    fake_worker w;
    w.attempt.begin_unbounded();
    CHECK(sweep_worker(w, 100 * ms, 0, 50 * ms).next == never);  // nothing to stamp or stop
    REQUIRE(w.attempt.try_stop(w.attempt.look(std::memory_order_acquire), stop_cause::shutdown));
    w.stopped_at_ns = 100 * ms;
    CHECK_FALSE(sweep_worker(w, 500 * ms, 0, 50 * ms).stuck);  // cause: shutdown, not deadline
    CHECK(w.attempt.end() == stop_cause::shutdown);

    fake_worker r;
    r.retiring = true;
    r.attempt.begin_timed(1 * ms, false);
    (void)sweep_worker(r, 0, 0, 50 * ms);
    CHECK(sweep_worker(r, 2 * ms, 0, 50 * ms).timed_out);
    CHECK_FALSE(sweep_worker(r, 10 * ms, 0, 50 * ms).stuck);
    CHECK(r.attempt.end() == stop_cause::deadline);
}

TEST_CASE("attempt_wake: at a deadline, within a stamp period for an unstamped attempt, else never",
          "[supervisor][unit]") {
    fake_worker w;
    CHECK(workerpool::detail::attempt_wake(w, 0, 50 * ms) == never);
    w.attempt.begin_timed(400 * ms, false);
    CHECK(workerpool::detail::attempt_wake(w, 10 * ms, 50 * ms) == 30 * ms);  // 5 % of 400 ms
    (void)w.attempt.stamp(10 * ms);
    CHECK(workerpool::detail::attempt_wake(w, 10 * ms, 50 * ms) == 410 * ms);
    CHECK(w.attempt.end() == stop_cause::none);
}

TEST_CASE("supervisor_signal: the plan it publishes answers the workers' questions",
          "[supervisor][unit]") {
    supervisor_signal signal;
    signal.publish(100 * ms, 150 * ms);
    CHECK(signal.next_wake() == 150 * ms);
    CHECK(signal.sleeps_longer_than(10 * ms));
    CHECK_FALSE(signal.sleeps_longer_than(50 * ms));
    CHECK(signal.too_slow_for(20 * ms));           // needs a stamp within 1 ms; it sleeps 50
    CHECK_FALSE(signal.too_slow_for(2'000 * ms));  // 5 % is 100 ms: 50 will do
    signal.publish(100 * ms, 101 * ms);
    CHECK_FALSE(signal.too_slow_for(20 * ms));  // a 1 ms horizon stamps anything in time

    // A kick before the sleep makes it return at once (were it lost, this would hang).
    signal.kick();
    std::stop_source never_stopped;
    signal.sleep_until(std::numeric_limits<std::int64_t>::max() / 2, never_stopped.get_token());
    // worker_woke kicks only when the plan is longer than the cadence.
    signal.publish(0, 500 * ms);
    signal.worker_woke(1 * ms);
    signal.sleep_until(std::numeric_limits<std::int64_t>::max() / 2, never_stopped.get_token());
    CHECK(signal.wakeups() == 0u);  // counted by the round, not by sleeping
}
