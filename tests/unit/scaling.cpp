// Autoscaling of a live pool (issue 3): growth under a backlog, shrinking when quiet, keep-alive,
// manual add/remove/limits, pluggable policies, events and stats, and retiring racing work and
// shutdown. Workers are held with gates so depth and counts are exact; waits use `eventually`.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/event_log.hpp"
#include "support/test_util.hpp"

#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::event;
using workerpool::event_kind;
using workerpool::scale_metrics;
using workerpool::submit_status;
using workerpool::test::event_log;
using workerpool::test::eventually;
using workerpool::test::gate;

// Counts the supervisor's ticks (one policy call each) and forwards to a real policy, or holds
// the count while disarmed so a test can build its backlog before the first real decision.
struct counting_policy {
    std::atomic<std::uint64_t> ticks{0};
    std::atomic<bool> armed{true};
    workerpool::scale_policy inner;

    workerpool::scale_policy get() {
        return [this](const scale_metrics& m) -> std::size_t {
            ticks.fetch_add(1, std::memory_order_relaxed);
            if (!armed.load(std::memory_order_relaxed)) {
                return m.workers;
            }
            return inner(m);
        };
    }
    // Waits for `n` more ticks, so a test can say "nothing happened for n ticks".
    bool wait_ticks(std::uint64_t n) const {
        const std::uint64_t target = ticks.load() + n;
        return eventually([&] { return ticks.load() >= target; }, 20s);
    }
};

workerpool::options<int> fast_options() {
    workerpool::options<int> o;
    o.capacity = 256;
    o.min_workers = 1;
    o.max_workers = 4;
    o.scale_up_depth = 4;
    o.scale_down_ratio = 0.75;
    o.scale_down_cooldown = 20ms;
    o.scale_interval = 5ms;
    o.idle_keep_alive = std::chrono::hours(1);
    return o;
}

workerpool::depth_policy depth_of(const workerpool::options<int>& o) {
    return workerpool::depth_policy({o.scale_up_depth, o.scale_down_ratio, o.scale_down_cooldown});
}

}  // namespace

TEST_CASE("the pool grows under a backlog to max_workers in one tick and not beyond",
          "[scaling][unit]") {
    gate hold;
    event_log log;
    counting_policy policy;
    std::atomic<int> done{0};
    auto o = fast_options();
    o.scale_down_cooldown = std::chrono::hours(1);
    policy.inner = depth_of(o);
    policy.armed = false;
    o.policy = policy.get();
    o.on_event = log.sink();
    dispatcher<int> pool(
        [&](int&) {
            hold.wait();
            done.fetch_add(1);
        },
        o);

    for (int i = 0; i < 64; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(pool.worker_count() == 1u);
    policy.armed = true;
    REQUIRE(eventually([&] { return pool.worker_count() == 4u; }));
    REQUIRE(policy.wait_ticks(20));

    const auto s = pool.stats();
    CHECK(pool.worker_count() == 4u);
    CHECK(s.workers == 4u);
    CHECK(s.peak_workers == 4u);
    CHECK(s.scale_ups == 3u);
    CHECK(s.scale_downs == 0u);
    const auto ups = log.of(event_kind::scale_up);
    REQUIRE(ups.size() == 1u);  // a backlog of 15x the mark adds all three workers at once
    CHECK(ups[0].workers_before == 1u);
    CHECK(ups[0].workers_after == 4u);
    CHECK(std::string(ups[0].reason) == "backlog");

    hold.open();
    const auto report = pool.shutdown(10s);
    CHECK(report.unprocessed.empty());
    CHECK(done.load() == 64);
    CHECK(pool.stats().completed == 64u);
}

TEST_CASE("the pool shrinks back to min_workers, one worker per tick, once the backlog is gone",
          "[scaling][unit]") {
    gate hold;
    event_log log;
    std::atomic<int> done{0};
    auto o = fast_options();
    o.on_event = log.sink();
    dispatcher<int> pool(
        [&](int&) {
            hold.wait();
            done.fetch_add(1);
        },
        o);

    for (int i = 0; i < 64; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.worker_count() == 4u; }));
    hold.open();
    REQUIRE(eventually([&] { return done.load() == 64; }));
    REQUIRE(eventually([&] { return pool.worker_count() == 1u; }));

    const auto s = pool.stats();
    CHECK(s.peak_workers == 4u);
    CHECK(s.scale_ups == 3u);
    CHECK(s.scale_downs == 3u);
    // Events recorded under the pool's lock are delivered just after it: they may trail stats().
    REQUIRE(eventually([&] { return log.count(event_kind::scale_down) == 3u; }));
    const auto downs = log.of(event_kind::scale_down);
    REQUIRE(downs.size() == 3u);
    for (const event& e : downs) {
        CHECK(e.workers_before == e.workers_after + 1);
        CHECK(std::string(e.reason) == "quiet");
    }
    CHECK(log.delta(event_kind::scale_up) == 3u);
    (void)pool.shutdown(10s);
}

TEST_CASE("the scaler never retires a worker that is running a handler", "[scaling][unit]") {
    gate hold;
    counting_policy policy;
    std::atomic<int> running{0};
    std::atomic<int> done{0};
    auto o = fast_options();
    o.min_workers = 4;
    o.scale_down_cooldown = 5ms;
    o.idle_keep_alive = 5ms;
    policy.inner = depth_of(o);
    o.policy = policy.get();
    dispatcher<int> pool(
        [&](int&) {
            running.fetch_add(1);
            hold.wait();
            done.fetch_add(1);
        },
        o);
    for (int i = 0; i < 4; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return running.load() == 4; }));
    pool.set_worker_limits(1, 4);  // from now on the scaler may shed down to one
    REQUIRE(pool.worker_count() == 4u);
    // Depth 0 (below the low mark) for many cool-downs and keep-alives: every worker is busy,
    // so none may go.
    REQUIRE(policy.wait_ticks(40));
    CHECK(pool.worker_count() == 4u);
    CHECK(pool.stats().scale_downs == 0u);

    hold.open();
    REQUIRE(eventually([&] { return pool.worker_count() == 1u; }));
    CHECK(done.load() == 4);
    (void)pool.shutdown(10s);
}

TEST_CASE("idle workers past idle_keep_alive retire down to min_workers", "[scaling][unit]") {
    event_log log;
    auto o = fast_options();
    o.min_workers = 4;
    o.scale_down_cooldown = std::chrono::hours(1);  // the depth policy alone would never shrink
    o.idle_keep_alive = 30ms;
    o.on_event = log.sink();
    dispatcher<int> pool([](int&) {}, o);
    pool.set_worker_limits(2, 4);
    REQUIRE(eventually([&] { return pool.worker_count() == 2u; }));
    (void)pool.shutdown(10s);
    CHECK(pool.stats().scale_downs == 2u);
    const auto downs = log.of(event_kind::scale_down);
    REQUIRE_FALSE(downs.empty());
    for (const event& e : downs) {
        CHECK(std::string(e.reason) == "idle keep-alive");
    }
    CHECK(log.delta(event_kind::scale_down) == 2u);
}

TEST_CASE("lowering min_workers while the supervisor decides to rest still retires idle workers",
          "[scaling][unit]") {
    // The supervisor decides under the worker set's lock whether the pool is at rest, then sets
    // its resting flag: a set_worker_limits in between saw no flag (no kick) and the decision was
    // stale, so the pool kept its workers for ever (seen once in CI, scaling.cpp's keep-alive
    // case under TSan). Many pools, the change made at varied moments after construction.
    const int pools = workerpool::test::under_tsan ? 40 : 200;
    int stuck_at_four = 0;
    for (int i = 0; i < pools; ++i) {
        auto o = fast_options();
        o.min_workers = 4;
        o.scale_down_cooldown = std::chrono::hours(1);
        o.idle_keep_alive = 1ms;
        dispatcher<int> pool([](int&) {}, o);
        for (int spin = 0; spin < i % 50; ++spin) {
            std::this_thread::yield();
        }
        pool.set_worker_limits(2, 4);
        if (!eventually([&] { return pool.worker_count() == 2u; }, 5s)) {
            ++stuck_at_four;
        }
        (void)pool.shutdown(10s);
    }
    CHECK(stuck_at_four == 0);
}

TEST_CASE("idle workers within their keep-alive and cool-down stay", "[scaling][unit]") {
    counting_policy policy;
    auto o = fast_options();
    o.scale_down_cooldown = std::chrono::hours(1);
    o.idle_keep_alive = std::chrono::hours(1);
    policy.inner = depth_of(o);
    o.policy = policy.get();
    dispatcher<int> pool([](int&) {}, o);
    REQUIRE(pool.add_worker());
    REQUIRE(pool.add_worker());
    REQUIRE(policy.wait_ticks(30));
    CHECK(pool.worker_count() == 3u);
    CHECK(pool.stats().scale_downs == 0u);
}

TEST_CASE("a steady load between the marks causes no scale events", "[scaling][unit]") {
    // Requests waiting out a retry backoff count as load, so six of them hold the depth at 6 —
    // between the low mark (4) and the high mark (8) — while every worker is idle and could go.
    counting_policy policy;
    event_log log;
    auto o = fast_options();
    o.scale_up_depth = 8;
    o.scale_down_ratio = 0.5;
    o.scale_down_cooldown = 10ms;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = std::chrono::hours(1);
    o.retry.max_backoff = std::chrono::hours(1);
    o.retry.jitter = workerpool::jitter_mode::none;
    policy.inner = depth_of(o);
    o.policy = policy.get();
    o.on_event = log.sink();
    o.min_workers = 3;
    std::atomic<int> attempts{0};
    dispatcher<int> pool(
        [&](int&) {
            attempts.fetch_add(1);
            throw std::runtime_error("fail once, then wait an hour");
        },
        o);
    for (int i = 0; i < 6; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 6u; }));
    pool.set_worker_limits(1, 4);  // two workers could go now, but the load says stay
    const std::size_t ups = log.count(event_kind::scale_up);
    const std::size_t downs = log.count(event_kind::scale_down);
    REQUIRE(policy.wait_ticks(60));  // 60 ticks = 30 cool-downs
    CHECK(log.count(event_kind::scale_up) == ups);
    CHECK(log.count(event_kind::scale_down) == downs);
    CHECK(pool.worker_count() == 3u);
    CHECK(attempts.load() == 6);

    const auto report = pool.shutdown(1s);
    CHECK(report.unprocessed.size() == 6u);  // the pending retries come back
}

TEST_CASE("a load below the low mark does shed idle workers", "[scaling][unit]") {
    // The counterpart of the test above: with the depth (3 pending retries) under the low mark,
    // the same pool does shrink, so the steady-load test can tell flapping from stillness.
    auto o = fast_options();
    o.scale_up_depth = 8;
    o.scale_down_ratio = 0.5;
    o.scale_down_cooldown = 10ms;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = std::chrono::hours(1);
    o.retry.max_backoff = std::chrono::hours(1);
    o.retry.jitter = workerpool::jitter_mode::none;
    o.min_workers = 3;
    dispatcher<int> pool([](int&) { throw std::runtime_error("fail once"); }, o);
    for (int i = 0; i < 3; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 3u; }));
    pool.set_worker_limits(1, 4);
    REQUIRE(eventually([&] { return pool.worker_count() == 1u; }));
    CHECK(pool.stats().retry_pending == 3u);
}

TEST_CASE("add_worker and remove_worker change the count by one within the limits",
          "[scaling][manual][unit]") {
    event_log log;
    auto o = fast_options();
    o.min_workers = 1;
    o.max_workers = 3;
    o.scale_down_cooldown = std::chrono::hours(1);  // only the calls under test change the count
    o.on_event = log.sink();
    dispatcher<int> pool([](int&) {}, o);
    REQUIRE(pool.worker_count() == 1u);
    CHECK(pool.add_worker());
    CHECK(pool.worker_count() == 2u);
    CHECK(pool.add_worker());
    CHECK(pool.worker_count() == 3u);
    CHECK_FALSE(pool.add_worker());
    CHECK(pool.worker_count() == 3u);
    CHECK(pool.remove_worker());
    CHECK(pool.worker_count() == 2u);
    CHECK(pool.remove_worker());
    CHECK(pool.worker_count() == 1u);
    CHECK_FALSE(pool.remove_worker());
    CHECK(pool.worker_count() == 1u);

    const auto s = pool.stats();
    CHECK(s.scale_ups == 2u);
    CHECK(s.scale_downs == 2u);
    CHECK(s.peak_workers == 3u);
    const auto ups = log.of(event_kind::scale_up);
    const auto downs = log.of(event_kind::scale_down);
    REQUIRE(ups.size() == 2u);
    REQUIRE(downs.size() == 2u);
    CHECK(ups[0].workers_before == 1u);
    CHECK(ups[0].workers_after == 2u);
    CHECK(ups[1].workers_before == 2u);
    CHECK(ups[1].workers_after == 3u);
    CHECK(downs[0].workers_before == 3u);
    CHECK(downs[0].workers_after == 2u);
    CHECK(std::string(ups[0].reason) == "add_worker");
    CHECK(std::string(downs[0].reason) == "remove_worker");
}

TEST_CASE("remove_worker lets a busy worker finish its request before it exits",
          "[scaling][manual][unit]") {
    gate hold;
    std::atomic<int> running{0};
    std::atomic<int> finished{0};
    std::atomic<int> failures{0};
    auto o = fast_options();
    o.scale_down_cooldown = std::chrono::hours(1);
    o.on_failure = [&](workerpool::failure<int>&&) { failures.fetch_add(1); };
    dispatcher<int> pool(
        [&](int&, std::stop_token st) {
            running.fetch_add(1);
            hold.wait();
            if (st.stop_requested()) {
                throw std::runtime_error("stopped mid-request");
            }
            finished.fetch_add(1);
        },
        o);
    REQUIRE(pool.add_worker());
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(pool.try_submit(2) == submit_status::accepted);
    REQUIRE(eventually([&] { return running.load() == 2; }));
    CHECK(pool.remove_worker());  // both are busy: one of them is marked to retire
    CHECK(pool.worker_count() == 1u);
    CHECK_FALSE(pool.remove_worker());  // at min_workers now
    hold.open();
    REQUIRE(eventually([&] { return finished.load() == 2; }));
    (void)pool.shutdown(10s);
    CHECK(failures.load() == 0);
    CHECK(pool.stats().completed == 2u);
}

TEST_CASE("set_worker_limits moves the count into the new limits before it returns",
          "[scaling][manual][unit]") {
    event_log log;
    auto o = fast_options();
    o.scale_down_cooldown = std::chrono::hours(1);
    o.on_event = log.sink();
    dispatcher<int> pool([](int&) {}, o);
    pool.set_worker_limits(3, 6);
    CHECK(pool.worker_count() == 3u);
    pool.set_worker_limits(1, 2);
    CHECK(pool.worker_count() == 2u);
    const auto ups = log.of(event_kind::scale_up);
    const auto downs = log.of(event_kind::scale_down);
    REQUIRE(ups.size() == 1u);
    REQUIRE(downs.size() == 1u);
    CHECK(ups[0].workers_before == 1u);
    CHECK(ups[0].workers_after == 3u);
    CHECK(downs[0].workers_before == 3u);
    CHECK(downs[0].workers_after == 2u);
    CHECK(std::string(ups[0].reason) == "set_worker_limits");

    SECTION("the new limits bound add_worker and remove_worker") {
        CHECK_FALSE(pool.add_worker());
        CHECK(pool.remove_worker());
        CHECK_FALSE(pool.remove_worker());
        CHECK(pool.worker_count() == 1u);
    }
    SECTION("invalid limits throw and leave the limits unchanged") {
        CHECK_THROWS_AS(pool.set_worker_limits(0, 0), std::invalid_argument);
        CHECK_THROWS_AS(pool.set_worker_limits(3, 2), std::invalid_argument);
        CHECK(pool.worker_count() == 2u);
        CHECK_FALSE(pool.add_worker());  // max still 2
        CHECK(pool.remove_worker());     // min still 1
        CHECK(pool.worker_count() == 1u);
    }
    SECTION("the error message names the field") {
        try {
            pool.set_worker_limits(5, 4);
            FAIL("set_worker_limits(5, 4) did not throw");
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find("min_workers") != std::string::npos);
        }
        try {
            pool.set_worker_limits(0, 0);
            FAIL("set_worker_limits(0, 0) did not throw");
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find("max_workers") != std::string::npos);
        }
    }
}

TEST_CASE("the scaler respects limits changed at run time", "[scaling][manual][unit]") {
    gate hold;
    auto o = fast_options();
    o.scale_down_cooldown = std::chrono::hours(1);
    dispatcher<int> pool([&](int&) { hold.wait(); }, o);
    pool.set_worker_limits(1, 2);
    for (int i = 0; i < 64; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.worker_count() == 2u; }));
    pool.set_worker_limits(1, 6);
    REQUIRE(eventually([&] { return pool.worker_count() == 6u; }));
    CHECK(pool.stats().peak_workers == 6u);
    hold.open();
    CHECK(pool.shutdown(10s).unprocessed.empty());
}

TEST_CASE("a pool lowered to zero workers starts one for a new request",
          "[scaling][manual][unit]") {
    std::atomic<int> done{0};
    auto o = fast_options();
    o.scale_interval = std::chrono::milliseconds(1000);  // the kick, not the tick, must do it
    dispatcher<int> pool([&](int&) { done.fetch_add(1); }, o);
    pool.set_worker_limits(0, 2);
    REQUIRE(pool.remove_worker());
    REQUIRE(pool.worker_count() == 0u);
    REQUIRE(pool.try_submit(7) == submit_status::accepted);
    CHECK(eventually([&] { return done.load() == 1; }, 20s));
}

TEST_CASE("a custom policy sees the current limits and its answer is clamped to them",
          "[scaling][policy][unit]") {
    std::atomic<std::size_t> answer{100};
    std::atomic<std::size_t> seen_min{0};
    std::atomic<std::size_t> seen_max{0};
    std::atomic<std::uint64_t> ticks{0};
    auto o = fast_options();
    o.min_workers = 2;
    o.max_workers = 5;
    o.policy = [&](const scale_metrics& m) {
        seen_min.store(m.min_workers);
        seen_max.store(m.max_workers);
        ticks.fetch_add(1);
        return answer.load();
    };
    dispatcher<int> pool([](int&) {}, o);
    REQUIRE(eventually([&] { return pool.worker_count() == 5u; }));
    answer = 0;
    REQUIRE(eventually([&] { return pool.worker_count() == 2u; }));
    pool.set_worker_limits(1, 3);
    answer = 3;
    const auto t = ticks.load();
    REQUIRE(eventually([&] { return ticks.load() > t + 2; }));
    CHECK(seen_min.load() == 1u);
    CHECK(seen_max.load() == 3u);
    CHECK(pool.worker_count() == 3u);
    CHECK(pool.stats().peak_workers == 5u);
}

TEST_CASE("a policy that throws is counted and leaves the count alone", "[scaling][policy][unit]") {
    std::atomic<std::uint64_t> calls{0};
    auto o = fast_options();
    o.policy = [&](const scale_metrics&) -> std::size_t {
        calls.fetch_add(1);
        throw std::runtime_error("policy failure");
    };
    dispatcher<int> pool([](int&) {}, o);
    REQUIRE(pool.add_worker());
    REQUIRE(eventually([&] { return calls.load() >= 10; }));
    CHECK(pool.worker_count() == 2u);
    CHECK(pool.stats().callback_errors >= 10u);
}

TEST_CASE("wait_time_policy plugged into a pool grows on queue wait and shrinks when quiet",
          "[scaling][policy][unit]") {
    gate hold;
    std::atomic<int> done{0};
    auto o = fast_options();
    o.max_workers = 6;
    o.policy = workerpool::wait_time_policy({5ms, 0.5, 20ms});
    dispatcher<int> pool(
        [&](int&) {
            hold.wait();
            done.fetch_add(1);
        },
        o);
    // Few requests (below any depth mark) that wait long: only the wait signal can grow the pool.
    for (int i = 0; i < 3; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.worker_count() >= 3u; }));
    CHECK(pool.stats().peak_workers <= 6u);
    hold.open();
    REQUIRE(eventually([&] { return done.load() == 3; }));
    REQUIRE(eventually([&] { return pool.worker_count() == 1u; }));
}

TEST_CASE("the scale events add up to the worker count", "[scaling][unit]") {
    gate hold;
    event_log log;
    auto o = fast_options();
    o.max_workers = 5;
    o.on_event = log.sink();
    std::size_t expected = 1;
    {
        dispatcher<int> pool([&](int&) { hold.wait(); }, o);
        for (int i = 0; i < 80; ++i) {
            REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return pool.worker_count() == 5u; }));
        hold.open();
        REQUIRE(eventually([&] { return pool.worker_count() == 1u; }));
        (void)pool.add_worker();  // the scaler may take it back at once: both are counted
        (void)pool.remove_worker();
        pool.set_worker_limits(3, 5);
        REQUIRE(eventually([&] { return pool.worker_count() == 3u; }));
        expected = pool.worker_count();
        (void)pool.shutdown(10s);  // joins the supervisor: every event has been delivered
        const auto s = pool.stats();
        CHECK(s.scale_ups == log.delta(event_kind::scale_up));
        CHECK(s.scale_downs == log.delta(event_kind::scale_down));
    }
    CHECK(expected == 3u);
    CHECK(1 + log.delta(event_kind::scale_up) - log.delta(event_kind::scale_down) == 3u);
}

TEST_CASE("retiring workers while requests flow never loses or duplicates a request",
          "[scaling][unit]") {
    constexpr int total = 8'000;
    std::vector<std::atomic<int>> seen(total);
    std::atomic<int> failures{0};
    auto o = fast_options();
    o.capacity = 64;
    o.max_workers = 6;
    o.scale_up_depth = 2;
    o.scale_interval = 1ms;
    o.scale_down_cooldown = 1ms;
    o.idle_keep_alive = 1ms;
    o.on_failure = [&](workerpool::failure<int>&&) { failures.fetch_add(1); };
    dispatcher<int> pool(
        [&](int& id) {
            seen[static_cast<std::size_t>(id)].fetch_add(1);
            if (id % 4 == 0) {
                std::this_thread::yield();
            }
        },
        o);

    std::atomic<bool> stop{false};
    std::thread churn([&] {
        unsigned i = 0;
        while (!stop.load()) {
            switch (i++ % 5) {
            case 0:
            case 1:
                (void)pool.add_worker();
                break;
            case 2:
            case 3:
                (void)pool.remove_worker();
                break;
            default:
                pool.set_worker_limits(i % 2, 2 + i % 5);
                break;
            }
            std::this_thread::yield();
        }
    });
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p) {
        producers.emplace_back([&, p] {
            for (int id = p; id < total; id += 2) {
                int r = id;
                while (pool.submit(std::move(r)) != submit_status::accepted) {
                }
            }
        });
    }
    for (auto& t : producers) {
        t.join();
    }
    REQUIRE(eventually([&] { return pool.stats().completed == static_cast<std::uint64_t>(total); },
                       60s));
    stop = true;
    churn.join();
    const auto report = pool.shutdown(10s);
    CHECK(report.unprocessed.empty());
    CHECK(failures.load() == 0);
    int lost = 0;
    int duplicated = 0;
    for (auto& n : seen) {
        lost += n.load() == 0 ? 1 : 0;
        duplicated += n.load() > 1 ? 1 : 0;
    }
    CHECK(lost == 0);
    CHECK(duplicated == 0);
}

TEST_CASE("scale-downs racing a shutdown neither hang nor lose requests", "[scaling][unit]") {
    for (int round = 0; round < 15; ++round) {
        CAPTURE(round);
        constexpr int total = 300;
        std::vector<std::atomic<int>> seen(total);
        std::atomic<int> failed{0};
        std::vector<int> unprocessed;
        std::atomic<bool> stop{false};
        auto o = fast_options();
        o.capacity = 512;
        o.max_workers = 4;
        o.scale_up_depth = 2;
        o.scale_interval = 1ms;
        o.scale_down_cooldown = 1ms;
        o.idle_keep_alive = 1ms;
        o.on_failure = [&](workerpool::failure<int>&& f) {
            seen[static_cast<std::size_t>(f.request)].fetch_add(1);
            failed.fetch_add(1);
        };
        {
            dispatcher<int> pool(
                [&](int& id) {
                    seen[static_cast<std::size_t>(id)].fetch_add(1);
                    if (id % 8 == 0) {
                        std::this_thread::yield();
                    }
                },
                o);
            for (int id = 0; id < total; ++id) {
                REQUIRE(pool.try_submit(int{id}) == submit_status::accepted);
            }
            std::thread shrinker([&] {
                unsigned i = 0;
                while (!stop.load()) {
                    if (i % 3 == 2) {
                        pool.set_worker_limits(1, 1 + i % 4);
                    } else {
                        (void)pool.remove_worker();
                        (void)pool.add_worker();
                    }
                    ++i;
                }
            });
            auto report = pool.shutdown(round % 3 == 0 ? 0ns : std::chrono::nanoseconds(2ms));
            stop = true;
            shrinker.join();
            unprocessed = std::move(report.unprocessed);
            CHECK(pool.worker_count() == 0u);
            CHECK_FALSE(pool.add_worker());
            CHECK_FALSE(pool.remove_worker());
            const auto s = pool.stats();
            CHECK(s.completed + s.failed + unprocessed.size() == static_cast<std::uint64_t>(total));
        }
        for (int id : unprocessed) {
            seen[static_cast<std::size_t>(id)].fetch_add(1);
        }
        int wrong = 0;
        for (auto& n : seen) {
            wrong += n.load() == 1 ? 0 : 1;
        }
        REQUIRE(wrong == 0);
    }
}

namespace {

// CPU ticks (utime + stime, in clock ticks) and context switches of each thread of this process.
struct thread_usage {
    std::uint64_t cpu_ticks = 0;
    std::uint64_t switches = 0;
};

std::set<long> thread_ids() {
    std::set<long> ids;
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] != '.') {
                ids.insert(std::stol(e->d_name));
            }
        }
        closedir(d);
    }
    return ids;
}

thread_usage usage_of(long tid) {
    thread_usage u;
    const std::string base = "/proc/self/task/" + std::to_string(tid);
    std::ifstream stat(base + "/stat");
    std::string line;
    if (std::getline(stat, line)) {
        // Fields after the ")" that ends the name: state is field 3; utime 14, stime 15.
        std::istringstream rest(line.substr(line.rfind(')') + 2));
        std::string field;
        for (int i = 3; i <= 15 && rest >> field; ++i) {
            if (i == 14 || i == 15) {
                u.cpu_ticks += std::stoull(field);
            }
        }
    }
    std::ifstream status(base + "/status");
    while (std::getline(status, line)) {
        if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
            line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
            u.switches += std::stoull(line.substr(line.find(':') + 1));
        }
    }
    return u;
}

thread_usage usage_of(const std::set<long>& tids) {
    thread_usage total;
    for (long t : tids) {
        const thread_usage u = usage_of(t);
        total.cpu_ticks += u.cpu_ticks;
        total.switches += u.switches;
    }
    return total;
}

}  // namespace

TEST_CASE("an idle pool at min_workers wakes only once per scale_interval",
          "[scaling][idle][unit]") {
    counting_policy policy;
    auto o = fast_options();
    o.min_workers = 2;
    o.scale_interval = 20ms;
    policy.inner = depth_of(o);
    o.policy = policy.get();
    const std::set<long> before = thread_ids();
    dispatcher<int> pool([](int&) {}, o);
    // New threads named by the pool ("workerpool-<id>", "workerpool-sup"); a sanitizer's own
    // background thread may be new too, and is not ours. Each pool thread names itself as it
    // starts, so wait until all three have.
    const auto new_pool_threads = [&before] {
        std::set<long> found;
        for (long t : thread_ids()) {
            std::ifstream comm("/proc/self/task/" + std::to_string(t) + "/comm");
            std::string name;
            std::getline(comm, name);
            if (before.count(t) == 0 && name.rfind("workerpool-", 0) == 0) {
                found.insert(t);
            }
        }
        return found;
    };
    REQUIRE(eventually([&] { return new_pool_threads().size() >= 3; }));
    const std::set<long> pool_threads = new_pool_threads();
    REQUIRE(policy.wait_ticks(3));  // past start-up
    const thread_usage start = usage_of(pool_threads);
    const std::uint64_t t0 = policy.ticks.load();
    REQUIRE(policy.wait_ticks(25));  // about 500 ms
    const thread_usage end = usage_of(pool_threads);
    const std::uint64_t ticks = policy.ticks.load() - t0;
    const std::uint64_t switches = end.switches - start.switches;
    const std::uint64_t cpu = end.cpu_ticks - start.cpu_ticks;
    INFO("pool threads: " << pool_threads.size() << ", ticks: " << ticks
                          << ", context switches: " << switches << ", CPU clock ticks: " << cpu);
    CHECK(pool_threads.size() == 3u);  // two workers and the supervisor
    // One wake-up per tick for the supervisor, none for the sleeping workers; slack for noise.
    CHECK(switches <= 2 * ticks + 10);
    // About 500 ms of wall time; a spinning thread would burn ~50 clock ticks.
    CHECK(cpu <= 10u);
}
