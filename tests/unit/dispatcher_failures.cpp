// Handler failures (issue 2): exceptions of any type stay inside the pool, reach on_failure with
// `error`, the exception_ptr and the request itself; max_attempts counts every call; a
// permanent_error is not retried; an on_failure or on_event that throws is caught and counted.
// Handlers only record; assertions run on the test thread after shutdown.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/failure_log.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::failure;
using workerpool::failure_reason;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::failure_log;
using workerpool::test::job;
using workerpool::test::message_of;

template <class Request>
workerpool::options<Request> one_worker() {
    workerpool::options<Request> o;
    o.capacity = 16;
    o.min_workers = 1;
    o.max_workers = 1;
    o.destructor_grace = 0ns;
    return o;
}

}  // namespace

TEST_CASE("a handler throwing a non-std type reaches on_failure with error and its exception_ptr",
          "[dispatcher][failure][unit]") {
    failure_log<int> failures;
    auto o = one_worker<int>();
    o.on_failure = failures.sink();
    dispatcher<int> pool([](int&) { throw 42; }, o);
    REQUIRE(pool.try_submit(7) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1u; }));
    CHECK(pool.worker_count() == 1u);  // the worker survived the throw
    (void)pool.shutdown(10s);

    auto f = failures.take();
    REQUIRE(f.size() == 1u);
    CHECK(f[0].request == 7);
    CHECK(f[0].reason == failure_reason::error);
    CHECK(f[0].attempts == 1u);
    REQUIRE(f[0].error != nullptr);
    int thrown = 0;
    try {
        std::rethrow_exception(f[0].error);
    } catch (int v) {
        thrown = v;
    } catch (...) {
        thrown = -1;
    }
    CHECK(thrown == 42);
    const auto s = pool.stats();
    CHECK(s.failed == 1u);
    CHECK(s.completed == 0u);
    CHECK(s.retried == 0u);
    CHECK(s.submitted == 1u);
}

TEST_CASE("on_failure receives the failed request whole, with the handler's exception",
          "[dispatcher][failure][unit]") {
    failure_log<job> failures;
    auto o = one_worker<job>();
    o.on_failure = failures.sink();
    dispatcher<job> pool(
        [](job& j, std::stop_token) {
            throw std::runtime_error("bad job " + std::to_string(j.id));
        },
        o);
    REQUIRE(pool.try_submit(job{3}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{4}) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 2u; }));
    (void)pool.shutdown(10s);
    auto f = failures.take();
    REQUIRE(f.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        const int id = static_cast<int>(i) + 3;
        CHECK(f[i].request.id == id);
        REQUIRE(f[i].request.payload != nullptr);
        CHECK(*f[i].request.payload == id * 10);
        CHECK(f[i].reason == failure_reason::error);
        CHECK(message_of(f[i].error) == "bad job " + std::to_string(id));
    }
}

TEST_CASE("max_attempts N calls an always-throwing handler exactly N times",
          "[dispatcher][failure][unit]") {
    for (const unsigned n : {1u, 2u, 4u}) {
        INFO("max_attempts = " << n);
        std::atomic<unsigned> calls{0};
        failure_log<int> failures;
        auto o = one_worker<int>();
        o.retry.max_attempts = n;
        o.retry.initial_backoff = 0ns;
        o.on_failure = failures.sink();
        dispatcher<int> pool(
            [&](int&) {
                calls.fetch_add(1);
                throw std::runtime_error("always");
            },
            o);
        REQUIRE(pool.try_submit(1) == submit_status::accepted);
        REQUIRE(eventually([&] { return failures.size() == 1u; }));
        (void)pool.shutdown(10s);
        CHECK(calls.load() == n);
        auto f = failures.take();
        REQUIRE(f.size() == 1u);
        CHECK(f[0].attempts == n);
        CHECK(f[0].reason == failure_reason::error);
        CHECK(message_of(f[0].error) == "always");
        const auto s = pool.stats();
        CHECK(s.retried == n - 1);
        CHECK(s.failed == 1u);
        CHECK(s.submitted == 1u);  // a retry is not a new submission
    }
}

TEST_CASE("a permanent_error is not retried", "[dispatcher][failure][unit]") {
    std::atomic<int> calls{0};
    failure_log<int> failures;
    auto o = one_worker<int>();
    o.retry.max_attempts = 5;
    o.retry.initial_backoff = 0ns;
    o.on_failure = failures.sink();
    dispatcher<int> pool(
        [&](int&) {
            calls.fetch_add(1);
            throw workerpool::permanent_error("cannot be fixed by trying again");
        },
        o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    REQUIRE(eventually([&] { return failures.size() == 1u; }));
    (void)pool.shutdown(10s);
    CHECK(calls.load() == 1);
    auto f = failures.take();
    REQUIRE(f.size() == 1u);
    CHECK(f[0].attempts == 1u);
    CHECK(f[0].reason == failure_reason::error);
    CHECK(message_of(f[0].error) == "cannot be fixed by trying again");
    CHECK(pool.stats().retried == 0u);
}

TEST_CASE("an on_failure that throws is counted in callback_errors and the pool keeps working",
          "[dispatcher][failure][unit]") {
    std::atomic<int> sink_calls{0};
    std::atomic<int> ok{0};
    auto o = one_worker<int>();
    o.on_failure = [&](failure<int>&& f) {
        sink_calls.fetch_add(1);
        if (f.request == 1) {
            throw std::runtime_error("sink is broken");
        }
        throw 3.5;  // not even a std::exception
    };
    dispatcher<int> pool(
        [&](int& v) {
            if (v < 10) {
                throw std::logic_error("fails");
            }
            ok.fetch_add(1);
        },
        o);
    for (int v : {1, 10, 2, 11, 3, 12}) {
        REQUIRE(pool.try_submit(int{v}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return pool.stats().completed + pool.stats().failed == 6u; }));
    CHECK(pool.worker_count() == 1u);
    REQUIRE(pool.try_submit(13) == submit_status::accepted);  // and it still takes work
    CHECK(pool.shutdown(10s).drained);
    CHECK(sink_calls.load() == 3);
    CHECK(ok.load() == 4);
    const auto s = pool.stats();
    CHECK(s.callback_errors == 3u);
    CHECK(s.failed == 3u);
    CHECK(s.completed == 4u);
}

TEST_CASE("an on_event that throws is counted in callback_errors and changes nothing else",
          "[dispatcher][failure][unit]") {
    std::atomic<int> event_calls{0};
    std::atomic<int> ok{0};
    auto o = one_worker<int>();
    o.on_event = [&](const workerpool::event&) {
        event_calls.fetch_add(1);
        throw std::runtime_error("observer is broken");
    };
    dispatcher<int> pool([&](int&) { ok.fetch_add(1); }, o);
    for (int v = 0; v < 5; ++v) {
        REQUIRE(pool.try_submit(int{v}) == submit_status::accepted);
    }
    const auto report = pool.shutdown(10s);  // emits shutdown_begin and shutdown_done at least
    CHECK(report.drained);
    CHECK(ok.load() == 5);
    CHECK(event_calls.load() >= 2);
    CHECK(pool.stats().callback_errors == static_cast<std::uint64_t>(event_calls.load()));
}

TEST_CASE("without on_failure a failed request is destroyed and still counted",
          "[dispatcher][failure][unit]") {
    auto o = one_worker<job>();
    dispatcher<job> pool([](job&) { throw std::runtime_error("x"); }, o);
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);
    CHECK(pool.shutdown(10s).drained);
    const auto s = pool.stats();
    CHECK(s.failed == 2u);
    CHECK(s.completed == 0u);
    CHECK(s.callback_errors == 0u);
    CHECK(s.completed + s.failed == s.submitted);
}

TEST_CASE("failures and successes interleave without disturbing each other",
          "[dispatcher][failure][accounting][unit]") {
    constexpr int n = 200;
    std::vector<std::atomic<int>> outcome(n);  // 1 = completed, 2 = failed; 0 = never seen
    auto o = one_worker<int>();
    o.min_workers = 2;
    o.max_workers = 2;
    o.capacity = 8;
    o.on_failure = [&](failure<int>&& f) {
        outcome[static_cast<std::size_t>(f.request)].fetch_add(2);
    };
    dispatcher<int> pool(
        [&](int& v) {
            if (v % 3 == 0) {
                throw v;
            }
            outcome[static_cast<std::size_t>(v)].fetch_add(1);
        },
        o);
    for (int v = 0; v < n; ++v) {
        REQUIRE(pool.submit(int{v}) == submit_status::accepted);
    }
    CHECK(pool.shutdown(30s).drained);
    int wrong = 0;
    for (int v = 0; v < n; ++v) {
        if (outcome[static_cast<std::size_t>(v)].load() != (v % 3 == 0 ? 2 : 1)) {
            ++wrong;
        }
    }
    CHECK(wrong == 0);
    const auto s = pool.stats();
    CHECK(s.failed == 67u);
    CHECK(s.completed == 133u);
    CHECK(s.completed + s.failed == s.submitted);
}
