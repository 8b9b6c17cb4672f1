// Shutdown and destruction (issue 2): draining within the grace, cancelling in-flight handlers
// through their stop tokens once it is over, handing back exactly the never-started requests,
// idempotence, a shutdown called from a handler, the destructor's routing of what is left to
// on_failure, and the accounting identity completed + failed + unprocessed == accepted.
// Handlers only record; assertions run on the test thread after shutdown has joined the workers.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/event_log.hpp"
#include "support/failure_log.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::event;
using workerpool::event_kind;
using workerpool::failure;
using workerpool::failure_reason;
using workerpool::submit_status;
using workerpool::test::event_log;
using workerpool::test::eventually;
using workerpool::test::failure_log;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::held_handler;
using workerpool::test::held_options;
using workerpool::test::holds;
using workerpool::test::job;
using workerpool::test::recorder;
using workerpool::test::stopped_by_token;
using workerpool::test::submitter;
using workerpool::test::untouched;

// The shutdown events among everything a pool reported, in order.
std::vector<event_kind> shutdown_kinds(const event_log& log) {
    return log.kinds(
        {event_kind::shutdown_begin, event_kind::shutdown_grace_over, event_kind::shutdown_done});
}

// Whether on_failure got the request whole (`job(id)`'s payload still in it).
bool payload_intact(const failure<job>& f) {
    return untouched(f.request, f.request.id);
}

std::vector<int> ids_of(const std::vector<job>& jobs) {
    std::vector<int> ids;
    ids.reserve(jobs.size());
    for (const job& j : jobs) {
        ids.push_back(j.payload ? j.id : -1);  // -1: handed back without its payload
    }
    return ids;
}

}  // namespace

TEST_CASE("shutdown of an idle pool returns at once with a drained, empty report",
          "[dispatcher][shutdown][unit]") {
    dispatcher<job> pool([](job&) {}, held_options(4, 2));
    const auto start = clock_type::now();
    const auto report = pool.shutdown(60s);
    CHECK(clock_type::now() - start < 5s);
    CHECK(report.drained);
    CHECK(report.unprocessed.empty());
    CHECK(report.stuck_workers == 0u);
    CHECK_FALSE(report.deferred);
    CHECK(pool.worker_count() == 0u);
}

TEST_CASE("shutdown drains every queued request within the grace", "[dispatcher][shutdown][unit]") {
    gate hold;
    recorder seen;
    event_log events;
    auto o = held_options(8, 1);
    o.on_event = events.sink();
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    for (int i = 0; i < 6; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));

    workerpool::shutdown_report<job> report;
    std::jthread closer([&] { report = pool.shutdown(60s); });
    REQUIRE(eventually([&] {
        return events.count(event_kind::shutdown_begin) == 1u;
    }));  // intake is closing; the queue is full
    hold.open();
    closer.join();

    CHECK(report.drained);
    CHECK(report.unprocessed.empty());
    CHECK(report.stuck_workers == 0u);
    CHECK(seen.ids() == std::vector<int>{0, 1, 2, 3, 4, 5});  // one worker: FIFO
    CHECK(shutdown_kinds(events) ==
          std::vector<event_kind>{event_kind::shutdown_begin, event_kind::shutdown_done});
    const auto s = pool.stats();
    CHECK(s.completed == 6u);
    CHECK(s.failed == 0u);
    CHECK(s.cancelled == 0u);
    CHECK(s.queue_depth == 0u);
    CHECK(s.completed + s.failed + report.unprocessed.size() == s.submitted);
}

TEST_CASE("shutdown past its grace stops in-flight tokens and hands back exactly the "
          "never-started requests",
          "[dispatcher][shutdown][unit]") {
    gate hold;
    recorder seen;
    failure_log<job> failures;
    event_log events;
    auto o = held_options(8, 2);
    o.on_failure = failures.sink();
    o.on_event = events.sink();
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 2; }));
    for (int i = 2; i < 7; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
    }

    const auto start = clock_type::now();
    auto report = pool.shutdown(20ms);  // the gate never lets a handler through
    CHECK(clock_type::now() - start < 5s);

    CHECK_FALSE(report.drained);
    CHECK(report.stuck_workers == 0u);
    CHECK(ids_of(report.unprocessed) == std::vector<int>{2, 3, 4, 5, 6});  // whole, in FIFO order
    CHECK(seen.ids().empty());

    const auto f = failures.take();
    REQUIRE(f.size() == 2u);
    for (const auto& r : f) {
        CHECK((r.request.id == 0 || r.request.id == 1));
        CHECK(r.reason == failure_reason::cancelled);
        CHECK(r.attempts == 1u);
        CHECK(holds<stopped_by_token>(r.error));  // the handler saw its token stopped and threw
        CHECK(payload_intact(r));
    }
    CHECK(f[0].request.id != f[1].request.id);
    CHECK(shutdown_kinds(events) == std::vector<event_kind>{event_kind::shutdown_begin,
                                                            event_kind::shutdown_grace_over,
                                                            event_kind::shutdown_done});

    const auto s = pool.stats();
    CHECK(s.submitted == 7u);
    CHECK(s.completed == 0u);
    CHECK(s.failed == 2u);
    CHECK(s.cancelled == 2u);
    CHECK(s.retried == 0u);
    CHECK(s.in_flight == 0u);
    CHECK(s.workers == 0u);
    CHECK(s.completed + s.failed + report.unprocessed.size() == s.submitted);
}

TEST_CASE("a handler that returns normally after shutdown stopped it counts as completed",
          "[dispatcher][shutdown][unit]") {
    std::atomic<int> saw_stop{0};
    failure_log<job> failures;
    gate hold;
    auto o = held_options(4, 1);
    o.on_failure = failures.sink();
    dispatcher<job> pool(
        [&](job&, std::stop_token st) {
            if (!hold.wait(st)) {
                saw_stop.fetch_add(1);  // and return normally
            }
        },
        o);
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    const auto report = pool.shutdown(0s);
    CHECK_FALSE(report.drained);
    CHECK(report.unprocessed.empty());
    CHECK(saw_stop.load() == 1);
    CHECK(failures.size() == 0u);
    const auto s = pool.stats();
    CHECK(s.completed == 1u);
    CHECK(s.failed == 0u);
    CHECK(s.cancelled == 0u);
}

TEST_CASE("a second shutdown returns at once with an empty report",
          "[dispatcher][shutdown][unit]") {
    gate hold;
    recorder seen;
    dispatcher<job> pool(held_handler(hold, seen), held_options(4, 1));
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    const auto first = pool.shutdown(0s);
    CHECK(first.unprocessed.size() == 1u);

    const auto start = clock_type::now();
    const auto second = pool.shutdown(60s);
    CHECK(clock_type::now() - start < 5s);
    CHECK(second.unprocessed.empty());
    CHECK_FALSE(second.drained);
    CHECK_FALSE(second.deferred);
    CHECK(second.stuck_workers == 0u);
    CHECK(pool.stats().failed == 1u);  // nothing was cancelled or failed twice
}

TEST_CASE("a shutdown racing another waits for it and returns an empty report",
          "[dispatcher][shutdown][unit]") {
    gate hold;
    recorder seen;
    event_log events;
    auto o = held_options(8, 1);
    o.on_event = events.sink();
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    for (int i = 0; i < 4; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));

    workerpool::shutdown_report<job> first;
    workerpool::shutdown_report<job> second;
    std::atomic<bool> second_done{false};
    std::jthread t1([&] { first = pool.shutdown(60s); });
    REQUIRE(eventually(
        [&] { return events.count(event_kind::shutdown_begin) == 1u; }));  // t1 holds the shutdown
    std::jthread t2([&] {
        second = pool.shutdown(0s);
        second_done = true;
    });
    hold.open();
    t1.join();
    t2.join();
    CHECK(second_done.load());
    CHECK(first.drained);
    CHECK(first.unprocessed.empty());
    CHECK(second.unprocessed.empty());
    CHECK(seen.ids() == std::vector<int>{0, 1, 2, 3});  // the 0 s grace of t2 cut nothing short
    CHECK(pool.stats().completed == 4u);
}

TEST_CASE("shutdown called from inside a handler returns deferred and does not hang",
          "[dispatcher][shutdown][unit]") {
    gate hold;
    recorder seen;
    std::atomic<bool> inner_done{false};
    std::atomic<bool> inner_deferred{false};
    std::atomic<std::size_t> inner_unprocessed{99};
    std::atomic<std::int64_t> inner_ms{-1};
    std::atomic<int> inner_after_submit{-1};
    dispatcher<job>* self = nullptr;
    dispatcher<job> pool(
        [&](job& j, std::stop_token st) {
            if (j.id != 0) {
                seen.add(j.id);
                return;
            }
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
            const auto start = clock_type::now();
            const auto report = self->shutdown(60s);
            inner_ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start)
                    .count();
            inner_deferred = report.deferred;
            inner_unprocessed = report.unprocessed.size();
            inner_after_submit = static_cast<int>(self->try_submit(job{100}));
            inner_done = true;
        },
        held_options(8, 1));
    self = &pool;  // published to the worker by the queue's push (release) / pop (acquire)
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    for (int i = 1; i < 4; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
    }
    hold.release(1);
    REQUIRE(eventually([&] { return inner_done.load(); }));
    CHECK(inner_deferred.load());
    CHECK(inner_unprocessed.load() == 0u);
    CHECK(inner_ms.load() < 5000);
    CHECK(inner_after_submit.load() == static_cast<int>(submit_status::closed));

    // Intake is closed for everyone; what was queued before still runs.
    CHECK(pool.try_submit(job{4}) == submit_status::closed);
    const auto report = pool.shutdown(10s);
    CHECK(report.drained);
    CHECK_FALSE(report.deferred);
    CHECK(report.unprocessed.empty());
    CHECK(seen.ids() == std::vector<int>{1, 2, 3});
    const auto s = pool.stats();
    CHECK(s.completed == 4u);
    CHECK(s.submitted == 4u);
}

TEST_CASE("the destructor with pending work does not hang and sends what is left to on_failure "
          "as cancelled",
          "[dispatcher][shutdown][destructor][unit]") {
    gate hold;
    recorder seen;
    failure_log<job> failures;
    auto o = held_options(8, 1);  // destructor_grace = 0
    o.on_failure = failures.sink();
    std::optional<dispatcher<job>> pool;
    pool.emplace(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    for (int i = 0; i < 5; ++i) {
        REQUIRE(pool->try_submit(job{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));

    const auto start = clock_type::now();
    pool.reset();  // the gate never lets a handler through: request 0 can only end by its stop
                   // token
    CHECK(clock_type::now() - start < 5s);

    CHECK(seen.ids().empty());
    const auto f = failures.take();
    REQUIRE(f.size() == 5u);  // completed (0) + failed (5) == accepted (5)
    std::vector<int> never_started;
    for (const auto& r : f) {
        CHECK(r.reason == failure_reason::cancelled);
        CHECK(payload_intact(r));
        if (r.request.id == 0) {
            CHECK(r.attempts == 1u);  // it ran, and threw once its token was stopped
            CHECK(holds<stopped_by_token>(r.error));
        } else {
            never_started.push_back(r.request.id);
            CHECK(r.attempts == 0u);
            CHECK(r.error == nullptr);
        }
    }
    CHECK(never_started == std::vector<int>{1, 2, 3, 4});
}

TEST_CASE("the destructor gives queued work destructor_grace to finish",
          "[dispatcher][shutdown][destructor][unit]") {
    gate hold;
    recorder seen;
    failure_log<job> failures;
    event_log events;
    // The handlers may go on once shutdown begins.
    events.then = [&hold](const event& e) {
        if (e.kind == event_kind::shutdown_begin) {
            hold.open();
        }
    };
    auto o = held_options(8, 1);
    o.destructor_grace = 60s;
    o.on_failure = failures.sink();
    o.on_event = events.sink();
    {
        // No `finally` here: releasing the handlers before the destructor would defeat the test;
        // `events.then` releases them in every case.
        dispatcher<job> pool(held_handler(hold, seen), o);
        for (int i = 0; i < 6; ++i) {
            REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    }
    CHECK(seen.ids() == std::vector<int>{0, 1, 2, 3, 4, 5});
    CHECK(failures.size() == 0u);
    CHECK(shutdown_kinds(events) ==
          std::vector<event_kind>{event_kind::shutdown_begin, event_kind::shutdown_done});
}

TEST_CASE("the destructor after an explicit shutdown reports nothing more",
          "[dispatcher][shutdown][destructor][unit]") {
    gate hold;
    recorder seen;
    failure_log<job> failures;
    auto o = held_options(8, 1);
    o.on_failure = failures.sink();
    std::vector<job> handed_back;
    {
        dispatcher<job> pool(held_handler(hold, seen), o);
        for (int i = 0; i < 3; ++i) {
            REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return hold.waiting() == 1; }));
        handed_back = pool.shutdown(0s).unprocessed;
        CHECK(failures.size() == 1u);  // request 0, cancelled in flight
    }
    CHECK(failures.size() == 1u);  // the caller owns 1 and 2 now: the destructor leaves them be
    CHECK(ids_of(handed_back) == std::vector<int>{1, 2});
}

TEST_CASE("completed + failed + unprocessed == accepted when some succeed, some fail and some "
          "never start",
          "[dispatcher][shutdown][accounting][unit]") {
    gate hold;
    recorder seen;
    failure_log<job> failures;
    auto o = held_options(16, 1);
    o.on_failure = failures.sink();
    dispatcher<job> pool(
        [&](job& j, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
            if (j.id % 2 == 1) {
                throw std::runtime_error("odd");
            }
            seen.add(j.id);
        },
        o);
    finally release([&] { hold.open(); });
    for (int i = 0; i < 12; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
    }
    hold.release(6);  // requests 0..5 run; 6 is then held
    REQUIRE(eventually([&] {
        const auto s = pool.stats();
        return s.completed + s.failed == 6u && hold.waiting() == 1;
    }));
    const auto report = pool.shutdown(0s);

    CHECK(seen.ids() == std::vector<int>{0, 2, 4});
    CHECK(ids_of(report.unprocessed) == std::vector<int>{7, 8, 9, 10, 11});
    const auto f = failures.take();
    REQUIRE(f.size() == 4u);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(f[i].request.id == static_cast<int>(2 * i + 1));
        CHECK(f[i].reason == failure_reason::error);
        CHECK(f[i].attempts == 1u);
        CHECK(f[i].error != nullptr);
    }
    CHECK(f[3].request.id == 6);
    CHECK(f[3].reason == failure_reason::cancelled);

    const auto s = pool.stats();
    CHECK(s.submitted == 12u);
    CHECK(s.completed == 3u);
    CHECK(s.failed == 4u);
    CHECK(s.cancelled == 1u);
    CHECK(s.completed + s.failed + report.unprocessed.size() == s.submitted);
}

TEST_CASE("completed + failed + unprocessed == accepted when shutdown races busy submitters",
          "[dispatcher][shutdown][accounting][unit]") {
    constexpr int producers = 3;
    std::atomic<std::uint64_t> ran{0};
    std::atomic<std::uint64_t> dead{0};
    std::atomic<std::uint64_t> accepted{0};
    auto o = held_options(8, 2);
    o.on_failure = [&](failure<job>&&) { dead.fetch_add(1); };
    dispatcher<job> pool(
        [&](job& j) {
            if (j.id % 5 == 0) {
                throw std::runtime_error("every fifth fails");
            }
            ran.fetch_add(1);
        },
        o);
    std::atomic<bool> closed_seen{false};
    workerpool::shutdown_report<job> report;
    {
        std::vector<std::jthread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                for (int i = 0;; ++i) {
                    const submit_status s = pool.submit(job{p * 1'000'000 + i});
                    if (s == submit_status::closed) {
                        closed_seen = true;
                        return;
                    }
                    if (s == submit_status::accepted) {
                        accepted.fetch_add(1);
                    }
                }
            });
        }
        finally stop([&] { (void)pool.shutdown(0s); });  // so that the submitters end even if
                                                         // the REQUIRE below fails
        REQUIRE(eventually([&] { return accepted.load() >= 300u; }));
        report = pool.shutdown(1ms);
    }  // every submitter has seen `closed`
    CHECK(closed_seen.load());
    const auto s = pool.stats();
    CHECK(s.submitted == accepted.load());
    CHECK(s.completed == ran.load());
    CHECK(s.failed == dead.load());
    CHECK(s.completed + s.failed + report.unprocessed.size() == s.submitted);
}
