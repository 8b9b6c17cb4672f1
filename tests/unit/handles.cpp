// Per-request handles (issue 19): each state and transition of a tracked request, cancel from
// every state, get() on every end, wait_for, coroutines, groups, and the destructor ordering of
// pool, handles and groups.

#include <workerpool/dispatcher.hpp>
#include <workerpool/handle.hpp>
#include <workerpool/request_group.hpp>

#include "support/catch.hpp"
#include "support/failure_log.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::failure_reason;
using workerpool::handle;
using workerpool::job_options;
using workerpool::request_failed;
using workerpool::request_group;
using workerpool::request_state;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;

struct job {
    int id = 0;
    bool hold = false;  // the handler waits at the test's gate
    bool fail = false;  // the handler throws
};

template <class Result = int>
workerpool::options<job, Result> small_pool(std::size_t workers = 1) {
    workerpool::options<job, Result> o;
    o.min_workers = workers;
    o.max_workers = workers;
    o.capacity = 64;
    o.retry.max_attempts = 1;
    return o;
}

// A pool whose handler returns each request's id, holding the `hold` ones at `g` (opened before
// the pool is destroyed), and counting its calls.
struct held_pool {
    gate g;
    std::atomic<int> ran{0};
    dispatcher<job, int> pool;

    explicit held_pool(workerpool::options<job, int> o = small_pool())
        : pool(
              [this](job& j) {
                  ran.fetch_add(1);
                  if (j.hold) {
                      g.wait();
                  }
                  return j.id;
              },
              std::move(o)) {}
    held_pool(const held_pool&) = delete;
    held_pool& operator=(const held_pool&) = delete;
    held_pool(held_pool&&) = delete;
    held_pool& operator=(held_pool&&) = delete;
    ~held_pool() { g.open(); }

    // Submits a held request (id 1) and waits until a worker holds it.
    handle<int> hold_one() {
        auto t = pool.try_submit_tracked(job{1, true});
        (void)eventually([&] { return g.waiting() == 1; });
        return std::move(t.handle);
    }
};

// The request's end as get() reports it: succeeded when it returns, else request_failed's state.
template <class Result>
request_state end_of(handle<Result>& h) {
    try {
        (void)h.get();
        return request_state::succeeded;
    } catch (const request_failed& e) {
        return e.state();
    }
}

// A coroutine that starts at once and is never awaited: enough to await handles in tests.
struct detached {
    struct promise_type {
        detached get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};

}  // namespace

TEST_CASE("request_state names every state", "[handles][unit]") {
    CHECK(std::string(to_string(request_state::queued)) == "queued");
    CHECK(std::string(to_string(request_state::running)) == "running");
    CHECK(std::string(to_string(request_state::retry_wait)) == "retry_wait");
    CHECK(std::string(to_string(request_state::succeeded)) == "succeeded");
    CHECK(std::string(to_string(request_state::failed)) == "failed");
    CHECK(std::string(to_string(request_state::cancelled)) == "cancelled");
    CHECK(std::string(to_string(request_state::handed_back)) == "handed_back");
}

TEST_CASE("a tracked request moves queued, running, succeeded, and get() returns what the handler "
          "returned, after on_success saw it",
          "[handles][unit]") {
    gate g;
    std::atomic<int> seen_by_on_success{0};
    auto o = small_pool();
    o.on_success = [&](job& j, const int& result) {
        seen_by_on_success.fetch_add(result == j.id * 10 ? 1 : 100);
    };
    dispatcher<job, int> pool(
        [&](job& j) {
            if (j.hold) {
                g.wait();
            }
            return j.id * 10;
        },
        o);
    finally open_at_end([&] { g.open(); });
    auto [s1, first] = pool.try_submit_tracked(job{1, true});
    REQUIRE(s1 == submit_status::accepted);
    REQUIRE(first.valid());
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    CHECK(first.state() == request_state::running);
    auto [s2, second] = pool.submit_tracked(job{2});
    REQUIRE(s2 == submit_status::accepted);
    CHECK(second.state() == request_state::queued);
    CHECK_FALSE(second.wait_for(20ms));  // wait_for times out on a request that has not ended
    g.open();
    CHECK(first.get() == 10);
    CHECK_FALSE(first.valid());  // get() consumes the handle, as std::future's does
    second.wait();
    CHECK(second.state() == request_state::succeeded);
    CHECK(second.get() == 20);
    CHECK(seen_by_on_success.load() == 2);
    auto [s3, third] = pool.submit_for_tracked(job{3}, 1s);
    REQUIRE(s3 == submit_status::accepted);
    CHECK(third.get() == 30);
}

TEST_CASE("get() on a failed request throws request_failed with its reason, attempts and last "
          "error",
          "[handles][unit]") {
    auto o = small_pool<void>();
    o.retry.max_attempts = 3;
    o.retry.initial_backoff = 1ms;
    o.retry.max_backoff = 1ms;
    dispatcher<job> pool([](job& j) { throw std::runtime_error("boom " + std::to_string(j.id)); },
                         o);
    auto t = pool.try_submit_tracked(job{7});
    REQUIRE(t.status == submit_status::accepted);
    try {
        t.handle.get();
        FAIL("get() returned");
    } catch (const request_failed& e) {
        CHECK(e.state() == request_state::failed);
        CHECK(e.reason() == failure_reason::error);
        CHECK(e.attempts() == 3u);
        REQUIRE(e.error() != nullptr);
        CHECK(workerpool::what(e.error()) == "boom 7");
        CHECK(std::string(e.what()).find("boom 7") != std::string::npos);
    }
}

TEST_CASE("a queued request cancelled through its handle never runs, ends cancelled at once, "
          "and reaches on_failure as cancelled, counted failed",
          "[handles][cancel][unit]") {
    workerpool::test::failure_log<job> failures;
    auto o = small_pool();
    o.on_failure = failures.sink();
    held_pool p(o);
    auto& pool = p.pool;
    handle<int> held = p.hold_one();
    REQUIRE(p.g.waiting() == 1);
    auto queued = pool.try_submit_tracked(job{2});
    REQUIRE(queued.status == submit_status::accepted);
    CHECK(queued.handle.cancel());
    CHECK(queued.handle.state() == request_state::cancelled);  // at once, before a worker sees it
    CHECK(queued.handle.wait_for(0ms));
    CHECK_FALSE(queued.handle.cancel());  // a second cancel changes nothing
    p.g.open();
    CHECK(held.get() == 1);
    pool.wait_idle();
    CHECK(p.ran.load() == 1);  // only the held request ran
    REQUIRE(failures.size() == 1);
    CHECK(failures.items[0].request.id == 2);
    CHECK(failures.items[0].reason == failure_reason::cancelled);
    CHECK(failures.items[0].attempts == 0u);
    const auto s = pool.stats();
    CHECK(s.failed == 1u);
    CHECK(s.cancelled == 1u);
    CHECK(s.completed == 1u);
    CHECK((end_of(queued.handle)) == request_state::cancelled);
}

TEST_CASE("a request waiting out a retry cancelled through its handle never runs again",
          "[handles][cancel][retry][unit]") {
    std::atomic<int> attempts{0};
    workerpool::test::failure_log<job> failures;
    auto o = small_pool<void>();
    o.retry.max_attempts = 5;
    o.retry.initial_backoff = 1h;  // it waits in the delay queue until cancelled
    o.retry.max_backoff = 1h;
    o.retry.jitter = workerpool::jitter_mode::none;
    o.on_failure = failures.sink();
    dispatcher<job> pool(
        [&](job&) {
            attempts.fetch_add(1);
            throw std::runtime_error("try later");
        },
        o);
    auto t = pool.try_submit_tracked(job{1});
    REQUIRE(t.status == submit_status::accepted);
    REQUIRE(eventually([&] { return t.handle.state() == request_state::retry_wait; }));
    // The handle says retry_wait just before the worker hands the request to the retry's queue,
    // which counts it.
    REQUIRE(eventually([&] { return pool.stats().retry_pending == 1u; }));
    CHECK(t.handle.cancel());
    CHECK(t.handle.state() == request_state::cancelled);
    try {
        t.handle.get();
        FAIL("get() returned");
    } catch (const request_failed& e) {
        CHECK(e.state() == request_state::cancelled);
        CHECK(e.reason() == failure_reason::cancelled);
        CHECK(e.attempts() == 1u);  // what it had made before the cancel
        CHECK(workerpool::what(e.error()) == "try later");
    }
    CHECK(attempts.load() == 1);
    // It leaves the delay queue at the supervisor's next pass (or shutdown reaches it first): it
    // goes to on_failure as cancelled, not back in the report.
    auto report = pool.shutdown(0s);
    CHECK(report.unprocessed.empty());
    REQUIRE(failures.size() == 1);
    CHECK(failures.items[0].reason == failure_reason::cancelled);
    CHECK(attempts.load() == 1);
}

TEST_CASE("cancelling a running request stops its attempt's token and it is not retried",
          "[handles][cancel][unit]") {
    std::atomic<int> attempts{0};
    std::atomic<bool> token_stopped{false};
    gate g;
    workerpool::test::failure_log<job> failures;
    auto o = small_pool<void>();
    o.retry.max_attempts = 5;
    o.retry.initial_backoff = 1ms;
    o.on_failure = failures.sink();
    dispatcher<job> pool(
        [&](job&, const std::stop_token& st) {
            attempts.fetch_add(1);
            if (!g.wait(st)) {
                token_stopped.store(true);
                throw workerpool::test::stopped_by_token{};
            }
        },
        o);
    finally open_at_end([&] { g.open(); });
    auto t = pool.try_submit_tracked(job{1});
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    CHECK(t.handle.state() == request_state::running);
    CHECK(t.handle.cancel());
    CHECK_FALSE(t.handle.cancel());
    t.handle.wait();
    CHECK(t.handle.state() == request_state::cancelled);
    CHECK(token_stopped.load());
    CHECK(attempts.load() == 1);
    pool.wait_idle();
    REQUIRE(failures.size() == 1);
    CHECK(failures.items[0].reason == failure_reason::cancelled);
    CHECK(pool.stats().cancelled == 1u);
}

TEST_CASE("a running request whose handler ignores the cancel still ends as cancelled when it "
          "returns",
          "[handles][cancel][unit]") {
    gate g;
    std::atomic<int> successes{0};
    workerpool::test::failure_log<job> failures;
    auto o = small_pool();
    o.on_success = [&](job&, const int&) { successes.fetch_add(1); };
    o.on_failure = failures.sink();
    dispatcher<job, int> pool(
        [&](job& j) {
            g.wait();  // ignores every token
            return j.id;
        },
        o);
    finally open_at_end([&] { g.open(); });
    auto t = pool.try_submit_tracked(job{4});
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    CHECK(t.handle.cancel());
    CHECK_FALSE(t.handle.wait_for(20ms));  // it has not ended: its handler still runs
    CHECK(t.handle.state() == request_state::running);
    g.open();
    CHECK((end_of(t.handle)) == request_state::cancelled);
    pool.wait_idle();
    CHECK(successes.load() == 0);
    REQUIRE(failures.size() == 1);
    CHECK(failures.items[0].reason == failure_reason::cancelled);
    CHECK(failures.items[0].attempts == 1u);
    CHECK(pool.stats().completed == 0u);
}

TEST_CASE("cancel after the end returns false and changes nothing", "[handles][cancel][unit]") {
    dispatcher<job, int> pool([](job& j) { return j.id; }, small_pool());
    auto t = pool.try_submit_tracked(job{5});
    t.handle.wait();
    CHECK_FALSE(t.handle.cancel());
    CHECK(t.handle.state() == request_state::succeeded);
    CHECK(t.handle.get() == 5);
}

TEST_CASE("shutdown hands back queued tracked requests: their handles report handed_back",
          "[handles][shutdown][unit]") {
    gate g;
    workerpool::test::failure_log<job> failures;
    auto o = small_pool<void>();
    o.on_failure = failures.sink();
    o.stuck_grace = 2s;
    dispatcher<job> pool(
        [&](job& j, const std::stop_token& st) {
            if (j.hold && !g.wait(st)) {
                throw workerpool::test::stopped_by_token{};
            }
        },
        o);
    finally open_at_end([&] { g.open(); });
    auto running = pool.try_submit_tracked(job{1, true});
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    auto back = pool.try_submit_tracked(job{2});
    auto cancelled = pool.try_submit_tracked(job{3});
    REQUIRE(cancelled.handle.cancel());
    auto report = pool.shutdown(0s);
    REQUIRE(report.unprocessed.size() == 1);
    CHECK(report.unprocessed[0].id == 2);
    CHECK(back.handle.state() == request_state::handed_back);
    try {
        back.handle.get();
        FAIL("get() returned");
    } catch (const request_failed& e) {
        CHECK(e.state() == request_state::handed_back);
        CHECK(e.attempts() == 0u);
        CHECK(e.error() == nullptr);
    }
    // The running one's token was stopped by shutdown: it ends as cancelled.
    CHECK((end_of(running.handle)) == request_state::cancelled);
    CHECK((end_of(cancelled.handle)) == request_state::cancelled);
    REQUIRE(failures.size() == 2);  // the running one and the one cancelled while queued
    CHECK(pool.stats().failed == 2u);
}

TEST_CASE("a refused tracked submit returns an empty handle and leaves the request untouched",
          "[handles][unit]") {
    gate g;
    auto o = small_pool();
    o.capacity = 1;
    dispatcher<job, int> pool(
        [&](job& j) {
            g.wait();
            return j.id;
        },
        o);
    finally open_at_end([&] { g.open(); });
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);  // fills the one slot
    job j{3, true, true};
    auto full = pool.try_submit_tracked(std::move(j));
    CHECK(full.status == submit_status::full);
    CHECK_FALSE(full.handle.valid());
    CHECK(j.id == 3);
    CHECK(j.hold);
    auto timed_out = pool.submit_for_tracked(std::move(j), 10ms);
    CHECK(timed_out.status == submit_status::full);
    CHECK_FALSE(timed_out.handle.valid());
    g.open();
    (void)pool.shutdown(1s);
    auto closed = pool.submit_tracked(std::move(j));
    CHECK(closed.status == submit_status::closed);
    CHECK_FALSE(closed.handle.valid());
    CHECK(j.id == 3);
}

TEST_CASE("an empty handle throws logic_error from wait and get, and cancel returns false",
          "[handles][unit]") {
    handle<int> h;
    CHECK_FALSE(h.valid());
    CHECK_FALSE(h.cancel());
    CHECK_THROWS_AS(h.wait(), std::logic_error);
    CHECK_THROWS_AS(h.wait_for(1ms), std::logic_error);
    CHECK_THROWS_AS(h.get(), std::logic_error);
}

namespace {

detached sum_all(std::vector<handle<int>> hs, std::atomic<long>& sum, std::atomic<int>& failures,
                 std::atomic<bool>& done) {
    long s = 0;
    for (handle<int>& h : hs) {
        try {
            s += co_await std::move(h);
        } catch (const request_failed&) {
            failures.fetch_add(1);
        }
    }
    sum.store(s);
    done.store(true);
}

detached await_one(handle<int> h, std::atomic<std::thread::id>& resumed_on,
                   std::atomic<int>& outcome) {
    int result = 0;
    try {
        result = co_await std::move(h);
    } catch (const request_failed& e) {
        result = e.state() == request_state::cancelled ? -1 : -2;
    }
    // The thread first: a test that saw `outcome` reads `resumed_on` next.
    resumed_on.store(std::this_thread::get_id());
    outcome.store(result);
}

}  // namespace

TEST_CASE("a coroutine awaiting 1000 handles resumes as each ends and sees every result",
          "[handles][coroutine][unit]") {
    constexpr int n = 1000;
    auto o = small_pool(2);
    o.capacity = n;
    dispatcher<job, int> pool(
        [](job& j) {
            if (j.fail) {
                throw std::runtime_error("odd one");
            }
            return j.id;
        },
        o);
    std::vector<handle<int>> hs;
    long expected = 0;
    for (int i = 0; i < n; ++i) {
        auto t = pool.submit_tracked(job{i, false, i % 100 == 7});
        REQUIRE(t.status == submit_status::accepted);
        expected += i % 100 == 7 ? 0 : i;
        hs.push_back(std::move(t.handle));
    }
    std::atomic<long> sum{0};
    std::atomic<int> failures{0};
    std::atomic<bool> done{false};
    sum_all(std::move(hs), sum, failures, done);
    REQUIRE(eventually([&] { return done.load(); }));
    CHECK(sum.load() == expected);
    CHECK(failures.load() == n / 100);
}

TEST_CASE("a coroutine awaiting a running or a queued request resumes on the worker that ends "
          "it",
          "[handles][coroutine][unit]") {
    held_pool p;
    auto& pool = p.pool;
    handle<int> held = p.hold_one();
    REQUIRE(p.g.waiting() == 1);
    auto queued = pool.try_submit_tracked(job{2});
    std::atomic<std::thread::id> held_resumed_on{};
    std::atomic<std::thread::id> queued_resumed_on{};
    std::atomic<int> held_outcome{0};
    std::atomic<int> queued_outcome{0};
    await_one(std::move(held), held_resumed_on, held_outcome);
    await_one(std::move(queued.handle), queued_resumed_on, queued_outcome);
    CHECK(held_outcome.load() == 0);  // both suspended
    CHECK(queued_outcome.load() == 0);
    p.g.open();
    REQUIRE(eventually([&] { return held_outcome.load() != 0 && queued_outcome.load() != 0; }));
    CHECK(held_outcome.load() == 1);
    CHECK(queued_outcome.load() == 2);
    CHECK(held_resumed_on.load() != std::this_thread::get_id());
    CHECK(queued_resumed_on.load() == held_resumed_on.load());  // the pool's one worker
    // Awaiting a request that has ended already does not suspend.
    auto ended = pool.try_submit_tracked(job{3});
    ended.handle.wait();
    std::atomic<std::thread::id> ended_resumed_on{};
    std::atomic<int> ended_outcome{0};
    await_one(std::move(ended.handle), ended_resumed_on, ended_outcome);
    CHECK(ended_outcome.load() == 3);
    CHECK(ended_resumed_on.load() == std::this_thread::get_id());
}

TEST_CASE("a coroutine awaiting a request its group cancels while it waits resumes on the "
          "cancelling thread with request_failed",
          "[handles][coroutine][cancel][group][unit]") {
    held_pool p;
    auto& pool = p.pool;
    handle<int> held = p.hold_one();
    REQUIRE(p.g.waiting() == 1);
    std::atomic<std::thread::id> resumed_on{};
    std::atomic<int> outcome{0};
    {
        request_group<job, int> group(pool);
        auto t = group.try_submit(job{2});
        CHECK(t.status == submit_status::accepted);  // no REQUIRE: the group would wait for p.g
        if (t.handle.valid()) {
            await_one(std::move(t.handle), resumed_on, outcome);
        }
        CHECK(outcome.load() == 0);
        group.cancel();
        CHECK(outcome.load() == -1);  // resumed inside cancel(), on this thread
        CHECK(resumed_on.load() == std::this_thread::get_id());
        p.g.open();
    }  // the group waits until the worker has handed the cancelled request to on_failure
    CHECK(held.get() == 1);
}

TEST_CASE("a group whose first failure cancels the rest", "[handles][group][unit]") {
    constexpr int n = 8;
    std::atomic<int> started{0};
    std::atomic<int> stopped{0};
    auto o = small_pool<void>(n);
    dispatcher<job> pool(
        [&](job& j, const std::stop_token& st) {
            started.fetch_add(1);
            if (j.fail) {
                // Fail once the others are running, so the cancel reaches running attempts.
                (void)eventually([&] { return started.load() >= n; }, 10s);
                throw std::runtime_error("backend down");
            }
            if (workerpool::test::wait_for_stop(st)) {
                stopped.fetch_add(1);
                throw workerpool::test::stopped_by_token{};
            }
        },
        o);
    request_group<job> group(pool, workerpool::group_options{.cancel_on_failure = true});
    for (int i = 0; i < n; ++i) {
        REQUIRE(group.submit(job{i, false, i == 3}).status == submit_status::accepted);
    }
    CHECK(group.wait_for(30s));
    CHECK(group.cancelled());
    CHECK(group.failed_count() == 1u);
    CHECK(group.cancelled_count() == n - 1u);
    CHECK(group.succeeded_count() == 0u);
    CHECK(group.outstanding() == 0u);
    CHECK(stopped.load() == n - 1);
    // A request submitted after the group gave up is cancelled as soon as it is accepted
    // (queued: it never runs; picked up already: its token is stopped).
    auto late = group.try_submit(job{100});
    REQUIRE(late.status == submit_status::accepted);
    CHECK(end_of(late.handle) == request_state::cancelled);
    group.wait();
    CHECK(group.cancelled_count() == n + 0u);
}

TEST_CASE("a group counts its ends, and its wait returns after the pool let go of each",
          "[handles][group][unit]") {
    std::atomic<int> on_failure_calls{0};
    auto o = small_pool(2);
    o.on_failure = [&](workerpool::failure<job>&&) { on_failure_calls.fetch_add(1); };
    dispatcher<job, int> pool(
        [](job& j) {
            if (j.fail) {
                throw std::runtime_error("no");
            }
            return j.id;
        },
        o);
    request_group<job, int> group(pool);  // no cancel_on_failure: the others go on
    std::vector<handle<int>> hs;
    for (int i = 0; i < 200; ++i) {
        auto t = group.submit(job{i, false, i % 10 == 0});
        REQUIRE(t.status == submit_status::accepted);
        hs.push_back(std::move(t.handle));
    }
    group.wait();
    CHECK(group.succeeded_count() == 180u);
    CHECK(group.failed_count() == 20u);
    CHECK(on_failure_calls.load() == 20);  // on_failure had run for each when wait returned
    CHECK_FALSE(group.cancelled());
    for (std::size_t i = 0; i < hs.size(); ++i) {
        if (i % 10 == 0) {
            CHECK(hs[i].state() == request_state::failed);
        } else {
            CHECK(hs[i].get() == static_cast<int>(i));
        }
    }
}

TEST_CASE("destroying a group waits for its requests", "[handles][group][unit]") {
    gate g;
    std::atomic<bool> handler_done{false};
    auto o = small_pool<void>(1);
    dispatcher<job> pool(
        [&](job&) {
            g.wait();
            handler_done.store(true);
        },
        o);
    finally open_at_end([&] { g.open(); });
    std::atomic<bool> group_gone{false};
    std::thread owner([&] {
        {
            request_group<job> group(pool);
            (void)group.try_submit(job{1});
        }  // ~request_group: waits for the request
        group_gone.store(true);
    });
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    // A broken destructor would return within this time; a correct one waits for the gate.
    CHECK_FALSE(eventually([&] { return group_gone.load(); }, 50ms));
    CHECK_FALSE(handler_done.load());
    g.open();
    owner.join();
    CHECK(handler_done.load());
}

TEST_CASE("a handle that outlives its pool reports the end the pool's destructor gave it",
          "[handles][lifetime][unit]") {
    gate g;
    std::optional<handle<int>> ran;
    std::optional<handle<int>> never_ran;
    {
        auto o = small_pool();
        o.destructor_grace = 0s;
        dispatcher<job, int> pool(
            [&](job& j, const std::stop_token& st) {
                (void)g.wait(st);
                return j.id;
            },
            o);
        ran.emplace(std::move(pool.try_submit_tracked(job{1}).handle));
        REQUIRE(eventually([&] { return g.waiting() == 1; }));
        never_ran.emplace(std::move(pool.try_submit_tracked(job{2}).handle));
    }  // the destructor stops the running one (it returns: a late success) and discards the other
    REQUIRE(ran->valid());
    CHECK(ran->state() == request_state::succeeded);
    CHECK(ran->get() == 1);
    CHECK(never_ran->state() == request_state::cancelled);
    CHECK((end_of(*never_ran)) == request_state::cancelled);
}

TEST_CASE("dropping a handle neither waits for its request nor cancels it",
          "[handles][lifetime][unit]") {
    gate g;
    std::atomic<int> done{0};
    dispatcher<job, int> pool(
        [&](job& j) {
            g.wait();
            done.fetch_add(1);
            return j.id;
        },
        small_pool());
    finally open_at_end([&] { g.open(); });
    {
        auto t = pool.try_submit_tracked(job{1});
        REQUIRE(t.status == submit_status::accepted);
    }  // dropped while it runs
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    g.open();
    pool.wait_idle();
    CHECK(done.load() == 1);
    CHECK(pool.stats().completed == 1u);
}

TEST_CASE("every tracked and plain request ends exactly once, under cancels, failures and "
          "retries from many threads",
          "[handles][cancel][accounting][unit]") {
    const int per_thread = workerpool::test::under_tsan ? 300 : 2000;
    constexpr int producers = 4;
    const auto total = static_cast<std::size_t>(producers * per_thread);
    // By request id: 1 when on_success ran for it, 2 when on_failure did (never both).
    std::vector<std::atomic<int>> ended(total);
    auto o = small_pool(3);
    o.capacity = 32;
    o.retry.max_attempts = 3;
    o.retry.initial_backoff = 100us;
    o.retry.max_backoff = 1ms;
    o.on_success = [&](job& j, const int& r) {
        ended[static_cast<std::size_t>(j.id)].fetch_add(r == j.id ? 1 : 100);
    };
    o.on_failure = [&](workerpool::failure<job>&& f) {
        ended[static_cast<std::size_t>(f.request.id)].fetch_add(2);
    };
    dispatcher<job, int> pool(
        [](job& j, const std::stop_token& st) {
            if (j.fail && !st.stop_requested()) {
                throw std::runtime_error("flaky");
            }
            if (j.hold) {
                (void)workerpool::test::wait_for_stop(st, 2ms);
            }
            return j.id;
        },
        o);
    struct mine {
        int id;
        handle<int> h;
        bool cancelled;
    };
    std::vector<std::vector<mine>> tracked_by(producers);
    std::atomic<long> accepted{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            std::minstd_rand rng(static_cast<unsigned>(p + 1));
            for (int i = 0; i < per_thread; ++i) {
                const int id = p * per_thread + i;
                job j{id, rng() % 7 == 0, rng() % 5 == 0};
                if (rng() % 2 == 0) {
                    if (pool.submit(std::move(j)) == submit_status::accepted) {
                        accepted.fetch_add(1);
                    }
                    continue;
                }
                auto t = pool.submit_tracked(std::move(j));
                if (t.status != submit_status::accepted) {
                    continue;
                }
                accepted.fetch_add(1);
                const bool cancelled = rng() % 3 == 0 && t.handle.cancel();
                tracked_by[static_cast<std::size_t>(p)].push_back(
                    {id, std::move(t.handle), cancelled});
            }
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    pool.wait_idle();
    const auto report = pool.shutdown(1s);
    const auto s = pool.stats();
    CHECK(report.unprocessed.empty());
    CHECK(s.submitted == static_cast<std::uint64_t>(accepted.load()));
    CHECK(s.completed + s.failed == s.submitted);
    std::size_t once = 0;
    for (const std::atomic<int>& e : ended) {
        once += e.load() == 1 || e.load() == 2 ? std::size_t{1} : std::size_t{0};
    }
    CHECK(once == static_cast<std::size_t>(accepted.load()));  // and none ended twice or wrongly
    std::size_t tracked = 0;
    std::size_t mismatched = 0;
    std::size_t cancel_not_honoured = 0;
    for (auto& list : tracked_by) {
        for (mine& m : list) {
            ++tracked;
            m.h.wait();
            const request_state st = m.h.state();
            const int e = ended[static_cast<std::size_t>(m.id)].load();
            mismatched +=
                (st == request_state::succeeded) != (e == 1) ? std::size_t{1} : std::size_t{0};
            cancel_not_honoured +=
                m.cancelled && st != request_state::cancelled ? std::size_t{1} : std::size_t{0};
        }
    }
    CHECK(tracked > 0u);
    CHECK(mismatched == 0u);           // a handle says succeeded exactly when on_success ran
    CHECK(cancel_not_honoured == 0u);  // cancel() == true means it ended cancelled
}

TEST_CASE("a coroutine that owns a cancel_on_failure group may end, and destroy the group, when "
          "the group's failure resumes it",
          "[handles][coroutine][group][unit]") {
    struct page_task {
        struct promise_type {
            page_task get_return_object() noexcept { return {}; }
            std::suspend_never initial_suspend() noexcept { return {}; }
            std::suspend_never final_suspend() noexcept { return {}; }
            void return_void() noexcept {}
            void unhandled_exception() noexcept { std::terminate(); }
        };
    };
    gate g;
    auto o = small_pool(2);
    dispatcher<job, int> pool(
        [&](job& j) {
            if (j.hold) {
                g.wait();
            }
            if (j.fail) {
                throw std::runtime_error("backend down");
            }
            return j.id;
        },
        o);
    finally open_at_end([&] { g.open(); });
    std::atomic<int> stage{0};
    // Both workers held; then the page's two parts are queued behind them.
    auto h1 = pool.try_submit_tracked(job{100, true});
    auto h2 = pool.try_submit_tracked(job{101, true});
    REQUIRE(eventually([&] { return g.waiting() == 2; }));
    auto page = [](dispatcher<job, int>& p, std::atomic<int>& at) -> page_task {
        request_group<job, int> parts(p, workerpool::group_options{.cancel_on_failure = true});
        auto failing = parts.submit(job{1, false, true});
        auto slow = parts.submit(job{2, false, false});
        at.store(1);
        try {
            (void)co_await std::move(slow.handle);
            at.store(3);  // it ran: the failure came too late to cancel it
        } catch (const request_failed&) {
            at.store(2);
        }
        // The group is destroyed here, maybe on the worker whose failure resumed us.
    };
    page(pool, stage);
    CHECK(stage.load() == 1);
    g.release(1);  // one worker goes on: it runs the failing part, which cancels the other
    REQUIRE(eventually([&] { return stage.load() >= 2; }));
    CHECK(stage.load() == 2);
    g.open();
    CHECK(h1.handle.get() == 100);
    CHECK(h2.handle.get() == 101);
    pool.wait_idle();
    CHECK(pool.stats().failed == 2u);  // the failing part, and the cancelled one
}

TEST_CASE("a coroutine destroyed while it awaits a handle is never resumed",
          "[handles][coroutine][lifetime][unit]") {
    struct lazy_task {
        struct promise_type {
            lazy_task get_return_object() noexcept {
                return lazy_task{std::coroutine_handle<promise_type>::from_promise(*this)};
            }
            std::suspend_never initial_suspend() noexcept { return {}; }
            std::suspend_always final_suspend() noexcept { return {}; }
            void return_void() noexcept {}
            void unhandled_exception() noexcept { std::terminate(); }
        };
        std::coroutine_handle<promise_type> frame;
    };
    held_pool p;
    handle<int> held = p.hold_one();
    auto queued = p.pool.try_submit_tracked(job{2});
    std::atomic<int> resumed{0};
    auto waiter = [](handle<int> h, std::atomic<int>& r) -> lazy_task {
        (void)co_await std::move(h);
        r.fetch_add(1);
    };
    lazy_task t = waiter(std::move(queued.handle), resumed);
    REQUIRE_FALSE(t.frame.done());
    t.frame.destroy();  // the coroutine is given up while it waits
    p.g.open();
    CHECK(held.get() == 1);
    p.pool.wait_idle();  // the queued request ended: nothing resumed the destroyed frame
    CHECK(resumed.load() == 0);
}

TEST_CASE("a running request cancelled while its handler ignores the token is declared stuck "
          "after stuck_grace, and replaced",
          "[handles][cancel][stuck][unit]") {
    gate g;
    auto o = small_pool(1);
    o.max_workers = 1;
    o.default_timeout = 1h;  // timed, but the deadline is far: only the cancel stops it
    o.stuck_grace = 50ms;
    o.scale_interval = 5ms;
    dispatcher<job, int> pool(
        [&](job& j) {
            if (j.hold) {
                g.wait();  // ignores its token
            }
            return j.id;
        },
        o);
    finally open_at_end([&] { g.open(); });
    auto stuck = pool.try_submit_tracked(job{1, true});
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    REQUIRE(stuck.handle.cancel());
    CHECK(eventually([&] { return pool.stats().stuck == 1u; }));
    auto next = pool.try_submit_tracked(job{2});
    CHECK(next.handle.wait_for(10s));  // a replacement ran it while the stuck one still waits
    CHECK(g.waiting() == 1u);
    g.open();
    CHECK((end_of(stuck.handle)) == request_state::cancelled);
    CHECK(next.handle.get() == 2);
}

TEST_CASE("a group that outlives its pool reports the ends the pool's destructor gave its requests",
          "[handles][group][lifetime][unit]") {
    gate g;
    auto o = small_pool(1);
    o.destructor_grace = 0s;
    auto pool = std::make_unique<dispatcher<job, int>>(
        [&](job& j, const std::stop_token& st) {
            if (j.hold && !g.wait(st)) {
                throw workerpool::test::stopped_by_token{};
            }
            return j.id;
        },
        o);
    request_group<job, int> group(*pool);
    auto running = group.try_submit(job{1, true});
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    auto queued = group.try_submit(job{2});
    CHECK(group.outstanding() == 2u);
    pool.reset();  // stops the running one (it throws: cancelled) and discards the queued one
    CHECK(group.wait_for(0s));
    CHECK(group.outstanding() == 0u);
    CHECK(group.cancelled_count() == 2u);
    CHECK(end_of(running.handle) == request_state::cancelled);
    CHECK(end_of(queued.handle) == request_state::cancelled);
}  // the group is destroyed after its pool
