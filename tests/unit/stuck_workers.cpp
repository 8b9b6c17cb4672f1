// Handlers that ignore their stopped token (issue 4): past deadline + stuck_grace the worker is
// declared stuck, stops counting as capacity, and a replacement (within stuck_allowance above
// max_workers) serves the queue; when the stuck handler returns, the surplus worker retires.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/event_log.hpp"
#include "support/test_util.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::event;
using workerpool::event_kind;
using workerpool::submit_status;
using workerpool::test::event_log;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::wait_for_stop;

std::int64_t now_ticks() {
    return clock_type::now().time_since_epoch().count();
}

clock_type::time_point from_ticks(std::int64_t t) {
    return clock_type::time_point(clock_type::duration(t));
}

workerpool::options<int> stuck_options() {
    workerpool::options<int> o;
    o.capacity = 64;
    o.min_workers = 1;
    o.max_workers = 1;
    o.scale_interval = 10ms;
    o.default_timeout = 20ms;
    o.stuck_grace = 30ms;
    o.stuck_allowance = 1;
    o.scale_down_cooldown = 20ms;
    return o;
}

}  // namespace

TEST_CASE("a stuck handler does not stall the queue: a replacement serves it, then retires",
          "[stuck][unit]") {
    gate release;
    event_log log;
    std::atomic<int> stuck_started{0};
    std::atomic<int> stuck_saw_stop{0};
    std::atomic<int> quick_done{0};
    std::atomic<std::size_t> capacity_seen{0};
    auto o = stuck_options();
    o.on_event = log.sink();
    workerpool::depth_policy depth({o.scale_up_depth, o.scale_down_ratio, o.scale_down_cooldown});
    o.policy = [&](const workerpool::scale_metrics& m) {
        capacity_seen.store(m.workers);
        return depth(m);
    };
    dispatcher<int> pool(
        [&](int& id, std::stop_token st) {
            if (id == 0) {
                stuck_started.fetch_add(1);
                release.wait();  // ignores the token
                stuck_saw_stop = st.stop_requested() ? 1 : 0;
                return;
            }
            quick_done.fetch_add(1);
        },
        o);
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(eventually([&] { return stuck_started.load() == 1; }));
    for (int i = 1; i <= 10; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return quick_done.load() == 10; }));

    auto s = pool.stats();
    CHECK(s.stuck == 1u);
    CHECK(s.stuck_total == 1u);
    CHECK(pool.worker_count() == 2u);  // one above max_workers: the allowance
    CHECK(s.peak_workers == 2u);
    REQUIRE(
        eventually([&] { return capacity_seen.load() == 1u; }));  // the stuck one is not capacity
    // Events recorded under the pool's lock are delivered just after it: they may trail stats().
    CHECK(eventually([&] { return log.count(event_kind::worker_stuck) == 1u; }));
    CHECK(
        eventually([&] { return log.count(event_kind::scale_up, "replace stuck worker") == 1u; }));
    CHECK(stuck_started.load() == 1);  // no second run of the stuck request

    release.open();
    REQUIRE(eventually([&] { return pool.worker_count() == 1u && pool.stats().stuck == 0u; }));
    REQUIRE(eventually([&] { return log.count(event_kind::worker_recovered) == 1u; }));
    (void)pool.shutdown(10s);
    s = pool.stats();
    CHECK(stuck_saw_stop.load() == 1);
    CHECK(s.completed == 11u);
    CHECK(s.late == 1u);  // it returned normally after its deadline
    CHECK(s.failed == 0u);
    CHECK(s.stuck_total == 1u);
}

TEST_CASE("at default settings a replacement runs queued work soon after a stuck deadline",
          "[stuck][unit]") {
    // Defaults for stuck_grace (100 ms), scale_interval (50 ms) and stuck_allowance; one worker,
    // a 20 ms timeout, and a queue of a single request behind the stuck one.
    gate release;
    std::atomic<std::int64_t> stuck_start{0};
    std::atomic<std::int64_t> probe_start{0};
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = 1;
    o.default_timeout = 20ms;
    dispatcher<int> pool(
        [&](int& id) {
            if (id == 0) {
                stuck_start = now_ticks();
                release.wait();
            } else {
                probe_start = now_ticks();
            }
        },
        o);
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(eventually([&] { return stuck_start.load() != 0; }));
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return probe_start.load() != 0; }));
    release.open();
    (void)pool.shutdown(10s);
    const auto deadline = from_ticks(stuck_start.load()) + 20ms;
    const auto latency = from_ticks(probe_start.load()) - deadline;
    const double latency_ms = std::chrono::duration<double, std::milli>(latency).count();
    INFO("replacement ran the queued request " << latency_ms
                                               << " ms after the stuck attempt's deadline");
    CHECK(latency >= 100ms);  // not before the stuck grace ran out
    // The requirement is 250 ms; under sanitizers on a loaded 2-core machine, allow much more.
    // bench/measure.cpp reports the true figure.
    CHECK(latency < 2s);
    CHECK(pool.stats().stuck_total == 1u);
}

// Regression: with every worker stuck, capacity was zero and scale_locked() started workers
// beyond max_workers + stuck_allowance (see the next test).
TEST_CASE("replacements stop at stuck_allowance above max_workers", "[stuck][unit][regression]") {
    std::array<gate, 2> release;
    std::atomic<int> stuck_started{0};
    std::atomic<int> probe_done{0};
    auto o = stuck_options();  // max_workers 1, allowance 1
    dispatcher<int> pool(
        [&](int& id) {
            if (id < 2) {
                stuck_started.fetch_add(1);
                release[static_cast<std::size_t>(id)].wait();
                return;
            }
            probe_done.fetch_add(1);
        },
        o);
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    // 0 is stuck on the first worker, 1 on its replacement; nobody is left for 2.
    REQUIRE(eventually([&] { return pool.stats().stuck_total == 2u; }));
    REQUIRE(pool.try_submit(2) == submit_status::accepted);
    const std::int64_t until =
        now_ticks() + std::chrono::duration_cast<clock_type::duration>(100ms).count();
    REQUIRE(eventually([&] { return now_ticks() > until; }));  // several grace periods and ticks
    auto s = pool.stats();
    CHECK(stuck_started.load() == 2);
    CHECK(s.stuck == 2u);
    CHECK(pool.worker_count() == 2u);
    CHECK(s.peak_workers == 2u);
    CHECK(probe_done.load() == 0);  // the documented behaviour at the hard limit

    release[0].open();
    REQUIRE(eventually([&] { return probe_done.load() == 1; }));
    release[1].open();
    REQUIRE(eventually([&] { return pool.worker_count() == 1u && pool.stats().stuck == 0u; }));
    (void)pool.shutdown(10s);
    CHECK(pool.stats().completed == 3u);
    CHECK(pool.stats().peak_workers == 2u);
}

// Regression: scale_locked(), add_worker() and set_worker_limits() compared
// only capacity (live minus stuck) with their target, so each stuck worker let the scaler start
// another one: 8 stuck requests ran on 9 threads with max_workers 2 and stuck_allowance 1.
TEST_CASE("with every handler stuck the pool never runs more than max_workers + stuck_allowance",
          "[stuck][scaling][unit][regression]") {
    // Every request ignores its token until the gate opens. The scaler must not keep starting
    // workers for a queue that only stuck handlers hold up: that is the thread leak of the Go
    // design this library replaces.
    gate release;
    std::atomic<int> done{0};
    auto o = stuck_options();
    o.max_workers = 2;
    o.stuck_allowance = 1;
    dispatcher<int> pool(
        [&](int&) {
            release.wait();
            done.fetch_add(1);
        },
        o);
    for (int i = 0; i < 8; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.stats().stuck_total >= 3u; }));
    // Several stuck graces and scaler ticks more: time is the behaviour here.
    const std::int64_t until =
        now_ticks() + std::chrono::duration_cast<clock_type::duration>(300ms).count();
    REQUIRE(eventually([&] { return now_ticks() > until; }));
    const auto s = pool.stats();
    CHECK(s.peak_workers <= 3u);
    CHECK(pool.worker_count() <= 3u);
    CHECK(release.waiting() <= 3u);
    release.open();
    REQUIRE(eventually([&] { return done.load() == 8; }));
    REQUIRE(eventually([&] { return pool.worker_count() <= 2u; }));
    (void)pool.shutdown(10s);
    CHECK(pool.stats().completed == 8u);
}

TEST_CASE("a handler that honours its stop within the grace is never declared stuck",
          "[stuck][timeout][unit]") {
    event_log log;
    std::atomic<int> done{0};
    auto o = stuck_options();
    o.default_timeout = 10ms;
    o.stuck_grace = 300ms;
    o.on_event = log.sink();
    dispatcher<int> pool(
        [&](int&, std::stop_token st) {
            wait_for_stop(st);
            done.fetch_add(1);
            throw std::runtime_error("stopped");
        },
        o);
    for (int i = 0; i < 5; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return done.load() == 5; }));
    const std::int64_t until =
        now_ticks() + std::chrono::duration_cast<clock_type::duration>(400ms).count();
    REQUIRE(eventually([&] { return now_ticks() > until; }));  // past any stuck grace
    (void)pool.shutdown(10s);
    const auto s = pool.stats();
    CHECK(s.stuck_total == 0u);
    CHECK(s.timed_out == 5u);
    CHECK(s.peak_workers == 1u);
    CHECK(log.count(event_kind::worker_stuck) == 0u);
}

TEST_CASE("a stuck handler that finally throws is timed_out and retried", "[stuck][retry][unit]") {
    gate release;
    std::atomic<int> calls{0};
    auto o = stuck_options();
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = 0ns;
    dispatcher<int> pool(
        [&](int&) {
            if (calls.fetch_add(1) == 0) {
                release.wait();
                throw std::runtime_error("gave up late");
            }
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().stuck_total == 1u; }));
    release.open();
    REQUIRE(eventually([&] { return pool.stats().completed == 1u; }));
    (void)pool.shutdown(10s);
    const auto s = pool.stats();
    CHECK(calls.load() == 2);
    CHECK(s.timed_out == 1u);
    CHECK(s.retried == 1u);
    CHECK(s.stuck == 0u);
}

TEST_CASE("shutdown reports a stuck handler and the destructor waits for it", "[stuck][unit]") {
    gate release;
    std::atomic<int> started{0};
    std::atomic<int> returned{0};
    std::atomic<bool> shutdown_returned{false};
    std::thread releaser;
    {
        auto o = stuck_options();
        dispatcher<int> pool(
            [&](int&) {
                started.fetch_add(1);
                release.wait();
                returned.fetch_add(1);
            },
            o);
        REQUIRE(pool.try_submit(1) == submit_status::accepted);
        REQUIRE(eventually([&] { return pool.stats().stuck_total == 1u; }));
        const auto t0 = clock_type::now();
        const auto report = pool.shutdown(20ms);
        const auto took = clock_type::now() - t0;
        shutdown_returned = true;
        CHECK(report.stuck_workers == 1u);
        CHECK_FALSE(report.drained);
        CHECK(report.unprocessed.empty());
        CHECK(took < 5s);  // bounded by grace + stuck_grace, not by the handler
        CHECK(returned.load() == 0);
        // Let the handler go a little after the destructor has begun to wait for it.
        releaser = std::thread([&] {
            const auto at = clock_type::now() + 50ms;
            (void)eventually([&] { return clock_type::now() > at; });
            release.open();
        });
    }  // ~dispatcher joins the stuck worker; it must not detach it
    CHECK(returned.load() == 1);
    releaser.join();
    CHECK(started.load() == 1);
    CHECK(shutdown_returned.load());
}

TEST_CASE("shutdown counts only workers still in a handler as stuck, not one slow to leave",
          "[stuck][shutdown][unit]") {
    // A worker on its way out (here held in on_worker_stop; under a sanitizer on a loaded machine,
    // simply not scheduled yet) when stuck_grace ends runs no handler: it is not stuck, and the
    // pool drained. It was once counted in stuck_workers.
    gate leaving;
    auto o = stuck_options();
    o.on_worker_stop = [&leaving](std::size_t) { leaving.wait(); };
    dispatcher<int> pool([](int&) {}, o);
    finally let_go([&] { leaving.open(); });
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(pool.wait_idle_for(30s));
    const auto report = pool.shutdown(0ms);
    // It cannot have left: on_worker_stop holds it.
    CHECK(eventually([&] { return leaving.waiting() == 1u; }));
    CHECK(report.stuck_workers == 0u);
    CHECK(report.drained);
    leaving.open();
}
