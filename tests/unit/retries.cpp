// Retries of a live pool (issue 4): attempts counted, backoff followed, retry_if and per-request
// max_attempts obeyed, no overlap between attempts of one request, backoff waits that hold no
// worker, retries never dropped on a full queue, handed back by shutdown, and bounded by the
// request's deadline.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/failure_log.hpp"
#include "support/retry_options.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::event;
using workerpool::event_kind;
using workerpool::failure;
using workerpool::failure_reason;
using workerpool::job_options;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::failure_log;
using workerpool::test::gate;
using workerpool::test::message_of;
using workerpool::test::retry_options;
using workerpool::test::wait_for_stop;

// Attempt start and end times per request id, recorded by handlers, read after shutdown.
struct attempt_log {
    struct attempt {
        int id;
        clock_type::time_point start;
        clock_type::time_point end;
    };
    std::mutex mutex;
    std::vector<attempt> items;
    void add(int id, clock_type::time_point start) {
        std::lock_guard lock(mutex);
        items.push_back({id, start, clock_type::now()});
    }
    std::vector<attempt> of(int id) {
        std::lock_guard lock(mutex);
        std::vector<attempt> out;
        for (const auto& a : items) {
            if (a.id == id) {
                out.push_back(a);
            }
        }
        return out;
    }
};

}  // namespace

TEST_CASE("a request that fails twice and then succeeds completes after three attempts",
          "[retry][unit]") {
    failure_log<int> failures;
    std::mutex events_mutex;
    std::vector<unsigned> retry_events;
    std::atomic<int> calls{0};
    auto o = retry_options(3);
    o.on_failure = failures.sink();
    o.on_event = [&](const event& e) {
        if (e.kind == event_kind::retry_scheduled) {
            std::lock_guard lock(events_mutex);
            retry_events.push_back(e.attempts);
        }
    };
    dispatcher<int> pool(
        [&](int&) {
            if (calls.fetch_add(1) < 2) {
                throw std::runtime_error("transient");
            }
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().completed == 1u; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 3);
    CHECK(failures.size() == 0u);
    const auto s = pool.stats();
    CHECK(s.retried == 2u);
    CHECK(s.failed == 0u);
    CHECK(s.submitted == 1u);  // retries are not new submissions
    CHECK(retry_events == std::vector<unsigned>{1, 2});
}

TEST_CASE("a request that keeps failing ends in on_failure after max_attempts with the last error",
          "[retry][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(4);
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&) {
            const int n = calls.fetch_add(1) + 1;
            throw std::runtime_error("attempt " + std::to_string(n));
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 4);
    REQUIRE(failures.items.size() == 1u);
    CHECK(failures.items[0].reason == failure_reason::error);
    CHECK(failures.items[0].attempts == 4u);
    CHECK(message_of(failures.items[0].error) == "attempt 4");
    const auto s = pool.stats();
    CHECK(s.retried == 3u);
    CHECK(s.failed == 1u);
    CHECK(s.completed == 0u);
}

TEST_CASE("job_options::max_attempts overrides the pool's retry policy per request",
          "[retry][unit]") {
    failure_log<int> failures;
    std::array<std::atomic<int>, 3> calls{};
    auto o = retry_options(2);
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int& id) {
            calls[static_cast<std::size_t>(id)].fetch_add(1);
            throw std::runtime_error("always");
        },
        o);
    REQUIRE(pool.try_submit(0) == submit_status::accepted);  // pool: 2
    REQUIRE(pool.try_submit(1, job_options{.max_attempts = 5}) == submit_status::accepted);
    REQUIRE(pool.try_submit(2, job_options{.max_attempts = 1}) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 3; }));
    (void)pool.shutdown(10s);
    CHECK(calls[0].load() == 2);
    CHECK(calls[1].load() == 5);
    CHECK(calls[2].load() == 1);
    for (const auto& f : failures.items) {
        CHECK(f.attempts ==
              static_cast<unsigned>(calls[static_cast<std::size_t>(f.request)].load()));
    }
}

TEST_CASE("retry_if decides which failures are retried and sees the attempt number",
          "[retry][unit]") {
    failure_log<int> failures;
    std::mutex seen_mutex;
    std::vector<unsigned> seen_attempts;
    std::atomic<int> calls{0};
    auto o = retry_options(10);
    o.on_failure = failures.sink();
    o.retry.retry_if = [&](const std::exception_ptr& error, unsigned attempt) {
        {
            std::lock_guard lock(seen_mutex);
            seen_attempts.push_back(attempt);
        }
        try {
            std::rethrow_exception(error);
        } catch (const std::logic_error&) {
            return false;  // not worth retrying
        } catch (...) {
            return true;
        }
    };
    dispatcher<int> pool(
        [&](int&) {
            if (calls.fetch_add(1) < 2) {
                throw std::runtime_error("transient");
            }
            throw std::logic_error("permanent");
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 3);  // stopped by retry_if, far before max_attempts
    CHECK(seen_attempts == std::vector<unsigned>{1, 2, 3});
    CHECK(failures.items[0].reason == failure_reason::error);
    CHECK(failures.items[0].attempts == 3u);
    CHECK(message_of(failures.items[0].error) == "permanent");
}

TEST_CASE("a retry_if that throws stops the retries and is counted", "[retry][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(5);
    o.on_failure = failures.sink();
    o.retry.retry_if = [](const std::exception_ptr&, unsigned) -> bool {
        throw std::runtime_error("predicate failure");
    };
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw 42;
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 1);
    CHECK(pool.stats().callback_errors >= 1u);
    CHECK(message_of(failures.items[0].error) == "<non-std exception>");
}

TEST_CASE("by default a permanent_error is not retried and other exceptions are", "[retry][unit]") {
    failure_log<int> failures;
    std::array<std::atomic<int>, 2> calls{};
    auto o = retry_options(3);
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int& id) {
            calls[static_cast<std::size_t>(id)].fetch_add(1);
            if (id == 0) {
                throw workerpool::permanent_error("bad input");
            }
            throw 7;  // not even a std::exception: retried all the same
        },
        o);
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 2; }));
    (void)pool.shutdown(10s);
    CHECK(calls[0].load() == 1);
    CHECK(calls[1].load() == 3);
}

TEST_CASE("an attempt that timed out is retried and may then succeed", "[retry][timeout][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(2);
    o.default_timeout = 20ms;
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&, std::stop_token st) {
            if (calls.fetch_add(1) == 0) {
                wait_for_stop(st);
                throw std::runtime_error("timed out");
            }
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().completed == 1u; }));
    (void)pool.shutdown(10s);
    const auto s = pool.stats();
    CHECK(s.timed_out == 1u);
    CHECK(s.retried == 1u);
    CHECK(s.late == 0u);
    CHECK(failures.size() == 0u);
}

TEST_CASE("a retry never starts while the previous attempt of the same request still runs",
          "[retry][timeout][unit]") {
    // The handler ignores its stop for a while after the deadline and then throws; with a zero
    // backoff and idle workers around, an early retry would overlap it.
    attempt_log attempts;
    failure_log<int> failures;
    std::array<std::atomic<int>, 4> running{};
    std::atomic<int> overlaps{0};
    auto o = retry_options(3);
    o.min_workers = 4;
    o.max_workers = 4;
    o.default_timeout = 10ms;
    o.stuck_grace = 10s;  // not the subject here
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int& id, std::stop_token st) {
            const auto start = clock_type::now();
            if (running[static_cast<std::size_t>(id)].fetch_add(1) != 0) {
                overlaps.fetch_add(1);
            }
            wait_for_stop(st);
            // Keep running 30 ms past the stop, ignoring it (time is the behaviour here).
            const auto until = clock_type::now() + 30ms;
            while (clock_type::now() < until) {
                std::this_thread::yield();
            }
            running[static_cast<std::size_t>(id)].fetch_sub(1);
            attempts.add(id, start);
            throw std::runtime_error("late failure");
        },
        o);
    for (int id = 0; id < 4; ++id) {
        REQUIRE(pool.try_submit(int{id}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return failures.size() == 4; }, 30s));
    (void)pool.shutdown(10s);
    CHECK(overlaps.load() == 0);
    for (int id = 0; id < 4; ++id) {
        const auto list = attempts.of(id);
        CAPTURE(id);
        REQUIRE(list.size() == 3u);
        for (std::size_t i = 1; i < list.size(); ++i) {
            CHECK(list[i].start >= list[i - 1].end);
        }
    }
    for (const auto& f : failures.items) {
        CHECK(f.reason == failure_reason::timed_out);
        CHECK(f.attempts == 3u);
    }
}

TEST_CASE("the pool waits at least the policy's backoff between attempts", "[retry][unit]") {
    attempt_log attempts;
    failure_log<int> failures;
    auto o = retry_options(4);
    o.retry.initial_backoff = 20ms;
    o.retry.multiplier = 2.0;
    o.retry.max_backoff = 50ms;
    o.retry.jitter = workerpool::jitter_mode::none;
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int& id) {
            attempts.add(id, clock_type::now());
            throw std::runtime_error("again");
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    const auto list = attempts.of(1);
    REQUIRE(list.size() == 4u);
    const std::chrono::nanoseconds expected[] = {20ms, 40ms, 50ms};  // capped at max_backoff
    for (std::size_t i = 1; i < list.size(); ++i) {
        const auto gap = list[i].start - list[i - 1].end;
        const double gap_ms = std::chrono::duration<double, std::milli>(gap).count();
        CAPTURE(i, gap_ms);
        CHECK(gap >= expected[i - 1]);
        CHECK(gap < expected[i - 1] + 5s);  // generous upper bound on a noisy machine
    }
}

TEST_CASE("a request waiting out its backoff holds no worker", "[retry][unit]") {
    failure_log<int> failures;
    std::atomic<int> first_calls{0};
    std::atomic<int> others{0};
    auto o = retry_options(2);  // one worker
    o.retry.initial_backoff = std::chrono::hours(1);
    o.retry.max_backoff = std::chrono::hours(1);
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int& id) {
            if (id == 0) {
                first_calls.fetch_add(1);
                throw std::runtime_error("fails, then waits an hour");
            }
            others.fetch_add(1);
        },
        o);
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 1u; }));
    for (int i = 1; i <= 20; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    // The only worker serves the rest while request 0 waits.
    REQUIRE(eventually([&] { return others.load() == 20; }));
    CHECK(pool.stats().retry_pending == 1u);

    SECTION("and shutdown hands the waiting request back unprocessed") {
        const auto report = pool.shutdown(1s);
        REQUIRE(report.unprocessed.size() == 1u);
        CHECK(report.unprocessed[0] == 0);
        CHECK(failures.size() == 0u);
        const auto s = pool.stats();
        CHECK(s.retry_pending == 0u);
        CHECK(s.completed + s.failed + report.unprocessed.size() == s.submitted);
    }
    CHECK(first_calls.load() == 1);
}

TEST_CASE("a due retry meeting a full queue waits for a free slot instead of being dropped",
          "[retry][unit]") {
    // Two workers, a queue of two. Request 1 holds worker B. Request 0 fails on worker A with a
    // 300 ms backoff; A then takes request 2 and is held too; requests 3 and 4 fill the queue.
    // When the retry of 0 falls due, the queue is full and both workers are busy.
    failure_log<int> failures;
    gate hold;
    std::atomic<int> zero_calls{0};
    std::array<std::atomic<int>, 5> done{};
    std::atomic<std::int64_t> failed_at{0};
    auto o = retry_options(2);
    o.capacity = 2;
    o.min_workers = 2;
    o.max_workers = 2;
    o.retry.initial_backoff = 300ms;
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int& id) {
            if (id == 0 && zero_calls.fetch_add(1) == 0) {
                failed_at = clock_type::now().time_since_epoch().count();
                throw std::runtime_error("first attempt fails");
            }
            if (id == 1 || id == 2) {
                hold.wait();
            }
            done[static_cast<std::size_t>(id)].fetch_add(1);
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 1u; }));
    REQUIRE(pool.try_submit(2) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 2; }));
    REQUIRE(pool.try_submit(3) == submit_status::accepted);
    REQUIRE(pool.try_submit(4) == submit_status::accepted);  // the queue is full now
    const auto due = clock_type::time_point(clock_type::duration(failed_at.load())) + 300ms;
    REQUIRE(clock_type::now() < due);  // the set-up beat the backoff
    // Time is the behaviour: let the retry fall due against the full queue, and then some.
    REQUIRE(eventually([&] { return clock_type::now() > due + 50ms; }));
    CHECK(pool.stats().retry_pending == 1u);  // still waiting, neither dropped nor failed
    CHECK(pool.stats().queue_depth == 2u);
    CHECK(failures.size() == 0u);
    CHECK(pool.try_submit(5) == submit_status::full);
    hold.open();
    REQUIRE(eventually([&] {
        return done[0].load() == 1 && done[1].load() == 1 && done[2].load() == 1 &&
               done[3].load() == 1 && done[4].load() == 1;
    }));
    (void)pool.shutdown(10s);
    CHECK(zero_calls.load() == 2);
    CHECK(failures.size() == 0u);
    CHECK(pool.stats().completed == 5u);
    CHECK(pool.stats().retried == 1u);
}

TEST_CASE("a due retry waiting for room takes the first freed slot, ahead of a blocked producer",
          "[retry][backpressure][unit]") {
    // The supervisor does not poll a full queue for due retries (it spun doing so, issue 14):
    // they wait for room, and the pop that frees a slot moves them in before it wakes the
    // producers blocked in submit. One worker, a queue of two, FIFO: request 0 fails with a
    // 200 ms backoff; request 1 holds the worker; 2 and 3 fill the queue; a producer blocks on 4.
    gate hold;
    std::mutex mutex;
    std::vector<int> order;  // guarded by mutex
    std::atomic<int> zero_calls{0};
    std::atomic<std::int64_t> failed_at{0};
    auto o = retry_options(2);
    o.capacity = 2;
    o.queue_shards = 1;
    o.min_workers = 1;
    o.max_workers = 1;
    o.retry.initial_backoff = 200ms;
    dispatcher<int> pool(
        [&](int& id) {
            {
                std::lock_guard lock(mutex);
                order.push_back(id);
            }
            if (id == 0 && zero_calls.fetch_add(1) == 0) {
                failed_at = clock_type::now().time_since_epoch().count();
                throw std::runtime_error("first attempt fails");
            }
            if (id == 1) {
                hold.wait();
            }
        },
        o);
    workerpool::test::finally open_at_end([&] { hold.open(); });
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 1u; }));
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(2) == submit_status::accepted);
    REQUIRE(pool.try_submit(3) == submit_status::accepted);  // the queue is full now
    std::atomic<bool> producer_done{false};
    std::jthread producer([&] {
        (void)pool.submit(4);
        producer_done = true;
    });
    const auto due = clock_type::time_point(clock_type::duration(failed_at.load())) + 200ms;
    REQUIRE(clock_type::now() < due);  // the set-up beat the backoff
    // Time is the behaviour: let the retry fall due against the full queue, and then some.
    REQUIRE(eventually([&] { return clock_type::now() > due + 50ms; }));
    CHECK_FALSE(producer_done.load());
    hold.open();
    REQUIRE(eventually([&] { return producer_done.load(); }));
    REQUIRE(pool.wait_idle_for(30s));
    std::lock_guard lock(mutex);
    REQUIRE(order.size() == 6u);
    const auto retry_at = std::find(order.begin() + 1, order.end(), 0) - order.begin();
    const auto producer_at = std::find(order.begin(), order.end(), 4) - order.begin();
    CHECK(retry_at < producer_at);
}

TEST_CASE("a retry that would wait past the request's deadline expires at once",
          "[retry][expired][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(5);
    o.retry.initial_backoff = std::chrono::hours(1);
    o.retry.max_backoff = std::chrono::hours(1);
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw std::runtime_error("fails");
        },
        o);
    const auto start = clock_type::now();
    REQUIRE(pool.try_submit(1, job_options{.deadline = start + 10s}) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    CHECK(clock_type::now() - start < 9s);  // did not wait for the deadline, let alone the hour
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 1);
    CHECK(failures.items[0].reason == failure_reason::expired);
    CHECK(failures.items[0].attempts == 1u);
    CHECK(message_of(failures.items[0].error) == "fails");
    CHECK(pool.stats().expired == 1u);
    CHECK(pool.stats().retry_pending == 0u);
}

TEST_CASE("retries within the deadline still run", "[retry][expired][unit]") {
    failure_log<int> failures;
    std::atomic<int> calls{0};
    auto o = retry_options(3);
    o.retry.initial_backoff = 1ms;
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw std::runtime_error("fails");
        },
        o);
    REQUIRE(
        pool.try_submit(1, job_options{.deadline = clock_type::now() + std::chrono::hours(1)}) ==
        submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 3);
    CHECK(failures.items[0].reason == failure_reason::error);
}

TEST_CASE("pending retries count as load for the scaler", "[retry][scaling][unit]") {
    // The depth of the latest tick, not the highest: the five requests were in the queue before
    // they failed, and a tick that reads the queue just before a request fails and the retry
    // count just after counts it twice (6). Once all five wait out their hour-long backoff with
    // the queue empty, every tick must see exactly 5, all of them retries.
    std::atomic<std::size_t> last_depth{0};
    std::atomic<unsigned> ticks{0};
    auto o = retry_options(2);
    o.max_workers = 2;
    o.retry.initial_backoff = std::chrono::hours(1);
    o.retry.max_backoff = std::chrono::hours(1);
    o.policy = [&](const workerpool::scale_metrics& m) {
        last_depth.store(m.queue_depth);
        ticks.fetch_add(1);
        return m.workers;
    };
    dispatcher<int> pool([](int&) { throw std::runtime_error("fails"); }, o);
    for (int i = 0; i < 5; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 5u; }));
    CHECK(pool.stats().queue_depth == 0u);
    const unsigned after = ticks.load();
    REQUIRE(eventually([&] { return ticks.load() >= after + 2; }));  // a whole tick since then
    CHECK(last_depth.load() == 5u);
}

TEST_CASE("a backoff too long to add to now waits instead of retrying at once",
          "[retry][unit][regression]") {
    // Regression: with max_backoff = nanoseconds::max() ("no cap"), backoff_ceiling turned the
    // double 2^63 back into INT64_MIN, and `now + delay` overflowed as well: the retry became due
    // at once instead of (practically) never.
    std::atomic<int> calls{0};
    auto o = retry_options(3);
    o.retry.initial_backoff = std::chrono::nanoseconds::max();
    o.retry.max_backoff = std::chrono::nanoseconds::max();
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw std::runtime_error("fails");
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return calls.load() >= 1 && pool.stats().retry_pending == 1u; }));
    const auto until = clock_type::now() + 100ms;
    REQUIRE(eventually([&] { return clock_type::now() > until; }));  // time is the behaviour
    CHECK(calls.load() == 1);
    CHECK(pool.stats().retry_pending == 1u);
    const auto report = pool.shutdown(1s);
    CHECK(report.unprocessed.size() == 1u);
}

TEST_CASE("stats().submitted never goes back while retries are re-enqueued",
          "[retry][stats][unit][regression]") {
    // Regression: submitted is derived as pushed - requeued, and the supervisor pushed a retry
    // before it counted it as requeued, so a snapshot taken in between counted the retry as a new
    // submission and the next one took it back.
    std::atomic<bool> done{false};
    std::atomic<int> went_back{0};
    std::atomic<std::uint64_t> max_seen{0};
    auto o = retry_options(25);
    o.min_workers = 2;
    o.max_workers = 2;
    dispatcher<int> pool([](int&) { throw std::runtime_error("again"); }, o);
    std::thread reader([&] {
        std::uint64_t last = 0;
        while (!done.load()) {
            const std::uint64_t now = pool.stats().submitted;
            went_back.fetch_add(now < last ? 1 : 0);
            last = std::max(last, now);
            max_seen.store(last);
        }
    });
    for (int i = 0; i < 100; ++i) {
        REQUIRE(pool.submit(int{i}) == submit_status::accepted);
    }
    const bool all_failed = eventually([&] { return pool.stats().failed == 100u; }, 60s);
    done = true;
    reader.join();
    REQUIRE(all_failed);
    CHECK(pool.stats().retried == 100u * 24u);
    CHECK(went_back.load() == 0);
    CHECK(max_seen.load() <= 100u);
}
