// `throw workerpool::retry_after(d)` (issue 20): the exception itself, the pure `retry_delay`
// (no threads, the jitter draw passed in), and a live pool: the next attempt starts no earlier
// than `d` after the failure (capped by max_backoff unless the policy says otherwise), counts as
// a failed attempt, obeys retry_if, and never waits past the request's deadline.

#include <workerpool/dispatcher.hpp>
#include <workerpool/retry.hpp>

#include "support/catch.hpp"
#include "support/event_log.hpp"
#include "support/failure_log.hpp"
#include "support/retry_options.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::event_kind;
using workerpool::failure_reason;
using workerpool::jitter_mode;
using workerpool::job_options;
using workerpool::retry_after;
using workerpool::retry_delay;
using workerpool::retry_policy;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::failure_log;
using workerpool::test::holds;
using workerpool::test::message_of;
using workerpool::test::retry_options;

retry_policy policy(std::chrono::nanoseconds initial, std::chrono::nanoseconds cap,
                    jitter_mode jitter) {
    retry_policy p;
    p.max_attempts = 10;
    p.initial_backoff = initial;
    p.multiplier = 2.0;
    p.max_backoff = cap;
    p.jitter = jitter;
    return p;
}

std::exception_ptr error_of(std::chrono::nanoseconds asked) {
    return std::make_exception_ptr(retry_after(asked));
}

// When each attempt of the one request started, and when each failed (just before its throw).
struct attempt_times {
    std::mutex mutex;
    std::vector<clock_type::time_point> starts;    // guarded by mutex
    std::vector<clock_type::time_point> failures;  // guarded by mutex
    void started() {
        std::lock_guard lock(mutex);
        starts.push_back(clock_type::now());
    }
    void failing() {
        std::lock_guard lock(mutex);
        failures.push_back(clock_type::now());
    }
};

}  // namespace

TEST_CASE("retry_after carries its delay, never negative, and says it in what()",
          "[retry][retry_after][unit]") {
    const retry_after plain(200ms);
    CHECK(plain.delay() == 200ms);
    CHECK(std::string(plain.what()) == "retry after 200 ms");
    const retry_after with_reason(2s, "HTTP 429");
    CHECK(with_reason.delay() == 2s);
    CHECK(std::string(with_reason.what()) == "HTTP 429 (retry after 2 s)");
    CHECK(std::string(retry_after(1500us).what()) == "retry after 1500 us");
    CHECK(std::string(retry_after(7ns).what()) == "retry after 7 ns");
    const retry_after negative(-5s);
    CHECK(negative.delay() == 0ns);
    CHECK(std::string(negative.what()) == "retry after 0 ns");
    // A std::runtime_error, retried by the default rule (it is not a permanent_error).
    const std::runtime_error& base = plain;
    CHECK(std::string(base.what()) == "retry after 200 ms");
    CHECK(workerpool::default_retry_if(error_of(1s)));
}

TEST_CASE("requested_retry_delay reads a retry_after and nothing else",
          "[retry][retry_after][unit]") {
    CHECK(workerpool::requested_retry_delay(error_of(30ms)) == std::optional{30ms});
    CHECK_FALSE(workerpool::requested_retry_delay(nullptr).has_value());
    CHECK_FALSE(workerpool::requested_retry_delay(
                    std::make_exception_ptr(std::runtime_error("retry after 30 ms")))
                    .has_value());
    CHECK_FALSE(workerpool::requested_retry_delay(std::make_exception_ptr(42)).has_value());
    struct http_429 : retry_after {
        http_429() : retry_after(3s, "HTTP 429") {}
    };
    CHECK(workerpool::requested_retry_delay(std::make_exception_ptr(http_429{})) ==
          std::optional{std::chrono::nanoseconds(3s)});
}

TEST_CASE("retry_delay without jitter is the larger of the backoff and the retry_after",
          "[retry][retry_after][unit]") {
    const auto p = policy(10ms, 5s, jitter_mode::none);
    // Backoff after 1, 2, 3 failures: 10, 20, 40 ms.
    CHECK(retry_delay(p, 1, 0.5, error_of(100ms)) == 100ms);
    CHECK(retry_delay(p, 3, 0.5, error_of(100ms)) == 100ms);
    CHECK(retry_delay(p, 1, 0.5, error_of(5ms)) == 10ms);  // shorter than the backoff: backoff
    CHECK(retry_delay(p, 3, 0.5, error_of(5ms)) == 40ms);
    CHECK(retry_delay(p, 2, 0.5, error_of(0ns)) == 20ms);
    CHECK(retry_delay(p, 2, 0.5, std::optional{std::chrono::nanoseconds(70ms)}) == 70ms);
}

TEST_CASE("retry_delay with jitter never goes below the retry_after",
          "[retry][retry_after][unit]") {
    for (const auto mode : {jitter_mode::full, jitter_mode::equal}) {
        const auto p = policy(100ms, 5s, mode);
        for (const double u : {0.0, 0.25, 0.5, 0.999}) {
            CAPTURE(static_cast<int>(mode), u);
            const auto backoff = workerpool::backoff_delay(p, 1, u);
            CHECK(retry_delay(p, 1, u, error_of(60ms)) ==
                  std::max(backoff, std::chrono::nanoseconds(60ms)));
            CHECK(retry_delay(p, 1, u, error_of(300ms)) == 300ms);  // above any draw
            CHECK(retry_delay(p, 1, u, error_of(60ms)) >= 60ms);
        }
    }
    // Full jitter with a zero draw: the backoff is 0, the retry_after alone decides.
    CHECK(retry_delay(policy(100ms, 5s, jitter_mode::full), 1, 0.0, error_of(40ms)) == 40ms);
}

TEST_CASE("retry_delay caps a retry_after at max_backoff unless the policy lets it exceed it",
          "[retry][retry_after][unit]") {
    auto p = policy(10ms, 1s, jitter_mode::none);
    CHECK(retry_delay(p, 1, 0.5, error_of(1h)) == 1s);
    CHECK(retry_delay(p, 1, 0.5, error_of(1s)) == 1s);
    CHECK(retry_delay(p, 1, 0.5, error_of(999ms)) == 999ms);
    p.retry_after_may_exceed_max_backoff = true;
    CHECK(retry_delay(p, 1, 0.5, error_of(1h)) == 1h);
    CHECK(retry_delay(p, 1, 0.5, error_of(5ms)) == 10ms);  // still never below the backoff
    const auto zero_cap = policy(10ms, 0ns, jitter_mode::none);
    CHECK(retry_delay(zero_cap, 1, 0.5, error_of(1s)) == 0ns);
}

TEST_CASE("retry_delay treats a negative retry_after as 0 and leaves other errors alone",
          "[retry][retry_after][unit]") {
    const auto p = policy(10ms, 5s, jitter_mode::none);
    // A negative request that bypassed the constructor's clamp (through the optional overload).
    CHECK(retry_delay(p, 1, 0.5, std::optional{std::chrono::nanoseconds(-1s)}) == 10ms);
    CHECK(retry_delay(p, 1, 0.5, error_of(-1s)) == 10ms);
    auto uncapped = p;
    uncapped.retry_after_may_exceed_max_backoff = true;
    CHECK(retry_delay(uncapped, 1, 0.5, std::optional{std::chrono::nanoseconds(-1s)}) == 10ms);
    for (const auto mode : {jitter_mode::none, jitter_mode::full, jitter_mode::equal}) {
        const auto q = policy(10ms, 5s, mode);
        for (unsigned n = 1; n <= 12; ++n) {
            for (const double u : {0.0, 0.3, 0.9}) {
                CAPTURE(static_cast<int>(mode), n, u);
                const auto expected = workerpool::backoff_delay(q, n, u);
                CHECK(retry_delay(q, n, u, std::make_exception_ptr(std::runtime_error("x"))) ==
                      expected);
                CHECK(retry_delay(q, n, u, std::exception_ptr{}) == expected);
                CHECK(retry_delay(q, n, u, std::nullopt) == expected);
            }
        }
    }
}

TEST_CASE("after a retry_after the next attempt starts no earlier than the delay asked for",
          "[retry][retry_after][unit]") {
    attempt_times times;
    workerpool::test::event_log events;
    std::atomic<int> calls{0};
    auto o = retry_options(3);  // the policy's own backoff is 0
    o.on_event = events.sink();
    dispatcher<int> pool(
        [&](int&) {
            times.started();
            const int n = calls.fetch_add(1);
            if (n == 0) {
                times.failing();
                throw retry_after(150ms, "busy");
            }
            if (n == 1) {
                times.failing();
                throw std::runtime_error("plain failure");
            }
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().completed == 1u; }));
    REQUIRE(pool.wait_idle_for(10s));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 3);
    REQUIRE(times.starts.size() == 3u);
    REQUIRE(times.failures.size() == 2u);
    const auto gap = times.starts[1] - times.failures[0];
    const double gap_ms = std::chrono::duration<double, std::milli>(gap).count();
    CAPTURE(gap_ms);
    CHECK(gap >= 150ms);
    CHECK(gap < 150ms + 10s);  // generous: it did not wait for something else
    const auto scheduled = events.of(event_kind::retry_scheduled);
    REQUIRE(scheduled.size() == 2u);
    CHECK(std::string(scheduled[0].reason) == "retry_after");
    CHECK(std::string(scheduled[1].reason) == "handler threw");
    const auto s = pool.stats();
    CHECK(s.retried == 2u);  // the retry_after counted as a failed attempt
    CHECK(s.completed == 1u);
    CHECK(s.failed == 0u);
}

TEST_CASE("a retry_after longer than max_backoff waits max_backoff unless the policy allows more",
          "[retry][retry_after][unit]") {
    attempt_times times;
    std::atomic<int> calls{0};
    auto o = retry_options(2);
    o.retry.max_backoff = 30ms;
    bool may_exceed = false;
    SECTION("capped") {
        may_exceed = false;
    }
    SECTION("uncapped") {
        may_exceed = true;
    }
    o.retry.retry_after_may_exceed_max_backoff = may_exceed;
    dispatcher<int> pool(
        [&](int&) {
            times.started();
            if (calls.fetch_add(1) == 0) {
                times.failing();
                throw retry_after(std::chrono::hours(1));
            }
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    if (!may_exceed) {
        REQUIRE(eventually([&] { return pool.stats().completed == 1u; }));
        (void)pool.shutdown(10s);
        REQUIRE(times.starts.size() == 2u);
        CHECK(times.starts[1] - times.failures[0] >= 30ms);
    } else {
        REQUIRE(eventually([&] { return pool.stats().retry_pending == 1u; }));
        // Time is the behaviour: let max_backoff pass several times over; the retry still waits.
        const auto failed_at = [&] {
            std::lock_guard lock(times.mutex);
            return times.failures.at(0);
        }();
        REQUIRE(eventually([&] { return clock_type::now() > failed_at + 300ms; }));
        CHECK(pool.stats().retry_pending == 1u);
        CHECK(calls.load() == 1);
        const auto report = pool.shutdown(1s);  // the hour-long wait goes back unprocessed
        CHECK(calls.load() == 1);
        REQUIRE(report.unprocessed.size() == 1u);
        CHECK(report.unprocessed[0] == 1);
    }
}

TEST_CASE("a retry_after on the last attempt goes to on_failure with it as the last error",
          "[retry][retry_after][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(2);
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw retry_after(1ms, "HTTP 503");
        },
        o);
    REQUIRE(pool.try_submit(7) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 2);
    REQUIRE(failures.items.size() == 1u);
    const auto& f = failures.items[0];
    CHECK(f.request == 7);
    CHECK(f.reason == failure_reason::error);
    CHECK(f.attempts == 2u);
    REQUIRE(holds<retry_after>(f.error));
    CHECK(workerpool::requested_retry_delay(f.error) ==
          std::optional{std::chrono::nanoseconds(1ms)});
    CHECK(message_of(f.error) == "HTTP 503 (retry after 1 ms)");
    CHECK(pool.stats().retried == 1u);
}

TEST_CASE("a retry_if that refuses a retry_after is honoured", "[retry][retry_after][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    std::atomic<int> asked{0};
    auto o = retry_options(5);
    o.on_failure = failures.sink();
    o.retry.retry_if = [&](const std::exception_ptr& error, unsigned) {
        asked.fetch_add(1);
        return !holds<retry_after>(error);
    };
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw retry_after(1ms);
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 1);
    CHECK(asked.load() == 1);
    CHECK(failures.items[0].reason == failure_reason::error);
    CHECK(failures.items[0].attempts == 1u);
    CHECK(holds<retry_after>(failures.items[0].error));
    CHECK(pool.stats().retried == 0u);
}

TEST_CASE("a retry_after that would wait past the request's deadline expires it at once",
          "[retry][retry_after][expired][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(5);
    o.retry.max_backoff = std::chrono::hours(1);  // the cap is not what stops it
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw retry_after(std::chrono::minutes(30));
        },
        o);
    const auto start = clock_type::now();
    REQUIRE(pool.try_submit(1, job_options{.deadline = start + 20s}) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    CHECK(clock_type::now() - start < 19s);  // did not wait for the deadline
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 1);
    CHECK(failures.items[0].reason == failure_reason::expired);
    CHECK(failures.items[0].attempts == 1u);
    CHECK(holds<retry_after>(failures.items[0].error));
    CHECK(pool.stats().expired == 1u);
    CHECK(pool.stats().retry_pending == 0u);
}
