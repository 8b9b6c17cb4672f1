// Regressions: one test per bug found in the core API, named after the behaviour the contract
// (issue 2) promises. Each comment says what was wrong. Handlers only record; assertions run on
// the test thread.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/dispatcher.hpp>
#include <workerpool/handler_map.hpp>

#include "support/catch.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::event;
using workerpool::event_kind;
using workerpool::failure;
using workerpool::failure_reason;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::held_options;
using workerpool::test::job;
using workerpool::test::stopped_by_token;
using workerpool::test::submitter;
using workerpool::test::this_tid;
using workerpool::test::untouched;

auto held_handler(gate& hold, std::atomic<int>& completed) {
    return [&hold, &completed](job&, std::stop_token st) {
        if (!hold.wait(st)) {
            throw stopped_by_token{};
        }
        completed.fetch_add(1);
    };
}

}  // namespace

TEST_CASE("a bounded_queue of capacity 1 holds exactly one element",
          "[bounded_queue][regression][unit]") {
    // Bug (fixed in 66f484b, also found by the fuzzer): with one slot, Vyukov's "full" mark
    // (pos + 1) equalled the "free for the next lap" mark (pos + capacity), so a second push
    // overwrote the queued element, and the next pop spun for ever. A dispatcher with
    // options.capacity = 1 lost requests and hung its workers.
    workerpool::bounded_queue<int> q{1};
    REQUIRE(q.try_push(1) == submit_status::accepted);
    REQUIRE(q.try_push(2) == submit_status::full);  // REQUIRE: a pop after a bad push spins
    CHECK(q.approx_size() == 1u);
    int out = 0;
    REQUIRE(q.try_pop(out));
    CHECK(out == 1);
    CHECK_FALSE(q.try_pop(out));
    for (int i = 0; i < 5; ++i) {  // and it keeps working lap after lap
        REQUIRE(q.try_push(int{i}) == submit_status::accepted);
        REQUIRE(q.try_push(int{i + 100}) == submit_status::full);
        REQUIRE(q.try_pop(out));
        CHECK(out == i);
    }
}

TEST_CASE("a blocked submit is accepted as soon as one slot frees, even while handlers hold on",
          "[dispatcher][backpressure][regression][unit]") {
    // Bug: consumers woke blocked submitters only once `producer_batch_` (capacity / 2, up to 64)
    // slots were free. When the workers then held their next requests, a submitter stayed
    // blocked although the queue was not full, for as long as the handlers ran.
    gate hold;
    std::atomic<int> completed{0};
    dispatcher<job> pool(held_handler(hold, completed), held_options(4, 1));
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    for (int i = 1; i <= 4; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);  // full: 4 of 4
    }
    submitter sub;
    std::jthread thread([&] {
        sub.tid = this_tid();
        sub.result = pool.submit(job{5});
        sub.done = true;
    });
    finally cleanup([&] {
        hold.open();
        (void)pool.shutdown(0s);
    });
    REQUIRE(sub.blocked());

    hold.release(1);  // request 0 ends; the worker takes request 1 and holds it: 3 of 4 queued
    REQUIRE(eventually([&] { return completed.load() == 1 && hold.waiting() == 1; }));
    CHECK(eventually([&] { return sub.done.load(); }, 3s));
    CHECK(sub.result.load() == submit_status::accepted);
    CHECK(pool.stats().queue_depth == 4u);  // requests 2, 3, 4 and 5; 1 is held
}

TEST_CASE("submit_for with a timeout too long to add to now blocks instead of failing at once",
          "[dispatcher][backpressure][regression][unit]") {
    // Bug: `clock::now() + ceil<nanoseconds>(timeout)` overflowed (undefined behaviour) for
    // timeouts such as hours::max() or nanoseconds::max(); the end time came out in the past and
    // submit_for returned `full` at once instead of waiting.
    bool in_hours = true;
    SECTION("hours::max()") {
        in_hours = true;
    }
    SECTION("nanoseconds::max()") {
        in_hours = false;
    }
    gate hold;
    std::atomic<int> completed{0};
    dispatcher<job> pool(held_handler(hold, completed), held_options(2, 1));
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);

    submitter sub;
    std::jthread thread([&] {
        sub.tid = this_tid();
        job j{3};
        sub.result = in_hours ? pool.submit_for(std::move(j), std::chrono::hours::max())
                              : pool.submit_for(std::move(j), std::chrono::nanoseconds::max());
        sub.request_untouched = untouched(j, 3);  // NOLINT(bugprone-use-after-move)
        sub.done = true;
    });
    finally cleanup([&] {
        hold.open();
        (void)pool.shutdown(0s);
    });
    CHECK(sub.blocked());
    hold.open();
    REQUIRE(eventually([&] { return sub.done.load(); }));
    CHECK(sub.result.load() == submit_status::accepted);
}

TEST_CASE("a shutdown grace too long to add to now waits for the handlers instead of "
          "cancelling them",
          "[dispatcher][shutdown][regression][unit]") {
    // Bug: `now_ns() + grace.count()` overflowed (undefined behaviour) for nanoseconds::max(),
    // the grace's end came out in the past, and shutdown cancelled running handlers and handed
    // back the queue at once: "wait as long as it takes" meant "do not wait at all".
    bool by_destructor = false;
    SECTION("shutdown(nanoseconds::max())") {
        by_destructor = false;
    }
    SECTION("the destructor with destructor_grace = nanoseconds::max()") {
        by_destructor = true;
    }
    gate hold;
    std::atomic<int> completed{0};
    std::atomic<int> failed{0};
    std::atomic<int> grace_over{0};
    auto o = held_options(8, 1);
    o.on_failure = [&](failure<job>&&) { failed.fetch_add(1); };
    // The handlers may go on once shutdown has begun: a correct pool then drains the queue.
    o.on_event = [&](const event& e) {
        if (e.kind == event_kind::shutdown_begin) {
            hold.open();
        } else if (e.kind == event_kind::shutdown_grace_over) {
            grace_over.fetch_add(1);
        }
    };
    std::optional<dispatcher<job>> pool;
    if (by_destructor) {
        o.destructor_grace = std::chrono::nanoseconds::max();
    }
    pool.emplace(held_handler(hold, completed), o);
    finally release([&] { hold.open(); });
    for (int i = 0; i < 4; ++i) {
        REQUIRE(pool->try_submit(job{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    std::size_t unprocessed = 0;
    bool drained = true;
    if (by_destructor) {
        pool.reset();
    } else {
        auto report = pool->shutdown(std::chrono::nanoseconds::max());
        unprocessed = report.unprocessed.size();
        drained = report.drained;
    }
    CHECK(grace_over.load() == 0);
    CHECK(drained);
    CHECK(unprocessed == 0u);
    CHECK(failed.load() == 0);
    CHECK(completed.load() == 4);
}

TEST_CASE("the destructor reports a request waiting out a retry backoff with its attempts and "
          "last error",
          "[dispatcher][shutdown][destructor][regression][unit]") {
    // Bug: the destructor took the retry queue through shutdown(), whose report keeps only the
    // requests, so on_failure got `attempts == 0` and no error for a request that had run and
    // thrown: failure::attempts says "0 if it never ran", and the class comment promises it.
    std::mutex mutex;
    std::vector<failure<int>> failures;
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = 1;
    o.destructor_grace = 0ns;
    o.retry.max_attempts = 3;
    o.retry.initial_backoff = 1h;  // the retry waits longer than the test
    o.retry.max_backoff = 1h;
    o.retry.jitter = workerpool::jitter_mode::none;
    o.on_failure = [&](failure<int>&& f) {
        std::lock_guard lock(mutex);
        failures.push_back(std::move(f));
    };
    {
        dispatcher<int> pool([](int&) { throw std::runtime_error("boom"); }, o);
        REQUIRE(pool.try_submit(1) == submit_status::accepted);
        REQUIRE(eventually([&] { return pool.stats().retry_pending == 1u; }));
    }
    REQUIRE(failures.size() == 1u);
    CHECK(failures[0].request == 1);
    CHECK(failures[0].reason == failure_reason::cancelled);
    CHECK(failures[0].attempts == 1u);
    REQUIRE(failures[0].error != nullptr);
    std::string message;
    try {
        std::rethrow_exception(failures[0].error);
    } catch (const std::exception& e) {
        message = e.what();
    }
    CHECK(message == "boom");
}

// ---- Found by other pools' test suites and programs written from the README (issue 14) ----

namespace {

void does_nothing(int&) {}

}  // namespace

TEST_CASE("a null handler is refused at construction with invalid_argument",
          "[dispatcher][handler_map][regression][unit]") {
    // Bug: an empty std::function was accepted and every request then failed with
    // bad_function_call after all its retries; a null function pointer was accepted and crashed
    // the process with SIGSEGV on a worker thread at the first request.
    using int_pool = dispatcher<int>;
    SECTION("an empty std::function") {
        const std::function<void(int&)> empty;
        CHECK_THROWS_AS(int_pool(empty), std::invalid_argument);
        const std::function<void(int&, const std::stop_token&)> empty_with_token;
        CHECK_THROWS_AS(int_pool(empty_with_token), std::invalid_argument);
    }
    SECTION("a null function pointer") {
        void (*null_fn)(int&) = nullptr;
        CHECK_THROWS_AS(int_pool(null_fn), std::invalid_argument);
    }
    SECTION("a null route of a handler_map") {
        workerpool::handler_map<int, int> routes{[](const int& r) { return r; }};
        void (*null_fn)(int&) = nullptr;
        CHECK_THROWS_AS(routes.on(1, null_fn), std::invalid_argument);
        CHECK_THROWS_AS(routes.on(2, std::function<void(int&)>{}), std::invalid_argument);
        CHECK(routes.size() == 0u);  // nothing was registered
    }
    SECTION("non-null handlers of every kind are still accepted") {
        std::atomic<int> ran{0};
        int_pool by_pointer(&does_nothing);
        int_pool by_function(std::function<void(int&)>([&ran](int&) { ran.fetch_add(1); }));
        int_pool by_lambda([](int&) {});
        REQUIRE(by_function.try_submit(1) == submit_status::accepted);
        by_function.wait_idle();
        CHECK(ran.load() == 1);
    }
}

TEST_CASE("wait_idle from one of the pool's own threads throws wait_deadlock instead of hanging",
          "[dispatcher][wait_idle][regression][unit]") {
    // Bug: the docs made it a precondition, but nothing checked it: wait_idle() from a handler
    // waited for its own request to end, for ever, with no message. The pool already detected
    // self-calls of submit and shutdown; wait_idle now throws. Callbacks that run on a pool
    // thread (on_failure on a worker, on_event on the supervisor) count as the pool's own.
    enum class outcome { none, threw_wait_deadlock, threw_other, returned };
    std::atomic<outcome> from_handler{outcome::none};
    std::atomic<outcome> from_on_failure{outcome::none};
    std::atomic<outcome> from_supervisor{outcome::none};
    std::atomic<int> timed_wait_false{0};
    std::atomic<dispatcher<int>*> self{nullptr};
    auto attempt = [&self](std::atomic<outcome>& into) {
        if (into.load() != outcome::none) {
            return;
        }
        try {
            self.load()->wait_idle();
            into = outcome::returned;
        } catch (const workerpool::wait_deadlock&) {
            into = outcome::threw_wait_deadlock;
        } catch (...) {
            into = outcome::threw_other;
        }
    };
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = 2;
    o.on_failure = [&](failure<int>&&) { attempt(from_on_failure); };
    o.on_event = [&](const event& e) {
        if (e.kind == event_kind::scale_up && e.reason == std::string("backlog")) {
            attempt(from_supervisor);  // scale events from the tick run on the supervisor
        }
    };
    o.scale_up_depth = 1;
    workerpool::test::gate hold;
    dispatcher<int> pool(
        [&](int& r) {
            if (r == 0) {
                attempt(from_handler);
                if (!self.load()->wait_idle_for(20ms)) {
                    timed_wait_false.fetch_add(1);
                }
                throw std::runtime_error("to on_failure");
            }
            hold.wait();
        },
        o);
    self = &pool;
    workerpool::test::finally open_at_end([&] { hold.open(); });
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    // A backlog behind a held worker makes the supervisor add a worker (and run on_event).
    for (int i = 1; i <= 4; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return from_supervisor.load() != outcome::none; }));
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(from_handler.load() == outcome::threw_wait_deadlock);
    CHECK(from_on_failure.load() == outcome::threw_wait_deadlock);
    CHECK(from_supervisor.load() == outcome::threw_wait_deadlock);
    CHECK(timed_wait_false.load() == 1);
}

TEST_CASE("shutdown(0) of a quiet pool reports drained and no grace over",
          "[dispatcher][shutdown][regression][unit]") {
    // Bug: `drained` was set from whether the worker threads had exited within the grace, so
    // 11-15 of 20 idle pools (15-20 under sanitizers) reported drained == false and emitted
    // shutdown_grace_over though nothing was queued or running. `drained` is documented as "no
    // attempt was cancelled".
    constexpr int pools = 20;
    int not_drained = 0;
    int grace_over = 0;
    int with_unprocessed = 0;
    for (int p = 0; p < pools; ++p) {
        std::atomic<int> over{0};
        std::atomic<int> ran{0};
        workerpool::options<int> o;
        o.min_workers = 1 + static_cast<std::size_t>(p % 4);
        o.max_workers = 4;
        o.on_event = [&over](const event& e) {
            if (e.kind == event_kind::shutdown_grace_over) {
                over.fetch_add(1);
            }
        };
        dispatcher<int> pool([&ran](int&) { ran.fetch_add(1); }, o);
        if (p % 2 == 1) {  // half of them ran something before going quiet
            REQUIRE(pool.try_submit(int{p}) == submit_status::accepted);
            pool.wait_idle();
        }
        const auto report = pool.shutdown(0s);
        not_drained += report.drained ? 0 : 1;
        with_unprocessed += report.unprocessed.empty() ? 0 : 1;
        grace_over += over.load();
    }
    CHECK(not_drained == 0);
    CHECK(grace_over == 0);
    CHECK(with_unprocessed == 0);
}

TEST_CASE("shutdown(0) with a request running or queued reports not drained and grace over",
          "[dispatcher][shutdown][unit]") {
    // The other side of the rule above: `drained` is false exactly when something was cancelled
    // or handed back from the queue.
    bool queued_too = false;
    SECTION("one request running") {
        queued_too = false;
    }
    SECTION("one running and one queued") {
        queued_too = true;
    }
    std::atomic<int> over{0};
    std::atomic<int> cancelled{0};
    auto o = held_options(4, 1);
    o.on_event = [&over](const event& e) {
        if (e.kind == event_kind::shutdown_grace_over) {
            over.fetch_add(1);
        }
    };
    o.on_failure = [&cancelled](failure<job>&& f) {
        if (f.reason == failure_reason::cancelled) {
            cancelled.fetch_add(1);
        }
    };
    gate hold;
    std::atomic<int> completed{0};
    dispatcher<job> pool(held_handler(hold, completed), o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    if (queued_too) {
        REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    }
    const auto report = pool.shutdown(0s);
    CHECK_FALSE(report.drained);
    CHECK(over.load() == 1);
    CHECK(cancelled.load() == 1);
    CHECK(report.unprocessed.size() == (queued_too ? 1u : 0u));
}

TEST_CASE("idle workers past their keep-alive retire together while the policy shrinks one by one",
          "[dispatcher][scaling][regression][unit]") {
    // Bug: scale_locked returned before its keep-alive branch whenever the policy's target was
    // below the worker count, so a shrinking policy retired one worker per tick and the
    // keep-alive was ignored: 64 idle workers with a 200 ms keep-alive took 3.16 s to go. An idle
    // worker past its keep-alive now retires at the next tick whatever the policy says.
    std::mutex mutex;
    std::vector<event> downs;
    workerpool::options<int> o;
    o.min_workers = 8;
    o.max_workers = 8;
    o.idle_keep_alive = 1ns;   // every idle worker is past it at the next tick
    o.scale_interval = 100ms;  // a few ticks per second: the old code needed 7 of them
    o.policy = [](const workerpool::scale_metrics& m) { return m.workers - 1; };  // shrink by one
    o.on_event = [&](const event& e) {
        if (e.kind == event_kind::scale_down) {
            std::lock_guard lock(mutex);
            downs.push_back(e);
        }
    };
    dispatcher<int> pool([](int&) {}, o);
    REQUIRE(eventually([&] { return pool.stats().idle == 8u; }));
    pool.set_worker_limits(1, 8);  // from here on the policy may shrink, and keep-alive applies
    REQUIRE(eventually([&] { return pool.worker_count() == 1u; }));
    // The supervisor emits its events after it let go of the worker set's lock, so the count can
    // reach 1 before the events arrive: wait for them to account for all seven.
    const auto retired = [&] {
        std::lock_guard lock(mutex);
        std::size_t n = 0;
        for (const event& e : downs) {
            n += e.workers_before - e.workers_after;
        }
        return n;
    };
    REQUIRE(eventually([&] { return retired() >= 7u; }));
    CHECK(retired() == 7u);
    std::lock_guard lock(mutex);
    // All seven went in the first tick that retired anyone (one event, or two: keep-alive then
    // the policy, in the same tick), not one per tick.
    CHECK(downs.front().workers_before == 8u);
    CHECK(downs.size() <= 2u);
}

TEST_CASE("with max_workers = SIZE_MAX a stuck worker is replaced and add_worker still works",
          "[dispatcher][stuck][scaling][regression][unit]") {
    // Bug (ants' "infinite pool"): the thread limit was max_workers + min(stuck, allowance),
    // which wrapped to 0 once a worker was stuck, so no replacement started, the quick requests
    // behind the stuck one waited, and add_worker() returned false. Limits now saturate.
    workerpool::test::gate release;
    std::atomic<int> stuck_started{0};
    std::atomic<int> quick_done{0};
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = std::numeric_limits<std::size_t>::max();
    o.default_timeout = 30ms;
    o.stuck_grace = 30ms;
    o.scale_up_depth = 1000;  // the backlog alone never grows the pool: only a replacement can
    o.scale_interval = 10ms;
    dispatcher<int> pool(
        [&](int& id) {
            if (id == 0) {
                stuck_started.fetch_add(1);
                release.wait();  // ignores its token
                return;
            }
            quick_done.fetch_add(1);
        },
        o);
    workerpool::test::finally open_at_end([&] { release.open(); });
    REQUIRE(pool.try_submit(0) == submit_status::accepted);
    REQUIRE(eventually([&] { return pool.stats().stuck == 1u; }));
    for (int i = 1; i <= 3; ++i) {
        REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
    }
    CHECK(eventually([&] { return quick_done.load() == 3; }));
    CHECK(pool.add_worker());
    release.open();
    CHECK(pool.wait_idle_for(30s));
    CHECK(stuck_started.load() == 1);
}

TEST_CASE("every option at its extreme value works without overflow",
          "[dispatcher][options][regression][unit]") {
    // Bug class: sums and conversions of user limits wrapped or overflowed (undefined behaviour,
    // caught by UBSan in the asan preset): nanoseconds(scale_interval) for milliseconds::max(),
    // now + stuck_grace, the spin deadline, 20 * horizon. Each section sets its fields to their
    // extremes and runs a little work, a failure and a retry through the pool.
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = 2;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = 0ns;
    o.retry.jitter = workerpool::jitter_mode::none;
    workerpool::job_options jo;
    SECTION("worker limits and allowances") {
        o.max_workers = std::numeric_limits<std::size_t>::max();
        o.stuck_allowance = std::numeric_limits<std::size_t>::max();
        o.scale_up_depth = std::numeric_limits<std::size_t>::max();
        o.scale_down_ratio = std::numeric_limits<double>::denorm_min();
    }
    SECTION("durations at their maximum") {
        o.scale_interval = std::chrono::milliseconds::max();
        o.idle_keep_alive = std::chrono::nanoseconds::max();
        o.scale_down_cooldown = std::chrono::nanoseconds::max();
        o.default_timeout = std::chrono::nanoseconds::max();
        o.stuck_grace = std::chrono::nanoseconds::max();
        o.destructor_grace = std::chrono::nanoseconds::max();
        o.retry.max_backoff = std::chrono::nanoseconds::max();
        o.retry.multiplier = std::numeric_limits<double>::max();
    }
    SECTION("a spin that never ends on its own") {
        o.spin_before_sleep = std::chrono::nanoseconds::max();
        o.latency_sample_every = std::numeric_limits<unsigned>::max();
    }
    SECTION("a tiny interval and timeouts") {
        o.scale_interval = 1ms;
        o.default_timeout = 1ns;
        o.stuck_grace = 0ns;
        o.idle_keep_alive = 1ns;
        o.latency_sample_every = 1;
    }
    SECTION("per-request extremes") {
        jo.timeout = std::chrono::nanoseconds::max();
        jo.max_attempts = std::numeric_limits<unsigned>::max();
        jo.deadline = std::chrono::steady_clock::time_point::max();
    }
    std::atomic<int> ran{0};
    std::atomic<int> failed{0};
    o.on_failure = [&failed](failure<int>&&) { failed.fetch_add(1); };
    std::optional<dispatcher<int>> pool;
    pool.emplace(
        [&ran](int& r) {
            if (ran.fetch_add(1) == 0 && r == 0) {
                throw std::runtime_error("first attempt of request 0 fails once");
            }
        },
        o);
    for (int i = 0; i < 20; ++i) {
        REQUIRE(pool->submit(int{i}, jo) == submit_status::accepted);
    }
    REQUIRE(pool->wait_idle_for(30s));
    CHECK(pool->add_worker() == (o.max_workers > 2 || pool->worker_count() < 2));
    const auto report = pool->shutdown(5s);
    CHECK(report.drained);
    const auto s = pool->stats();
    CHECK(s.completed == 20u);
    CHECK(failed.load() == 0);
    CHECK(s.retried == 1u);
}

namespace {

// 12 MiB: more than a worker thread's 8 MiB stack. Never on a stack in these tests either.
struct huge_request {
    int id = 0;
    std::array<unsigned char, std::size_t{12} << 20> bytes;
};

std::unique_ptr<huge_request> make_huge(int id) {
    auto r = std::make_unique<huge_request>();
    r->id = id;
    r->bytes.fill(static_cast<unsigned char>(id));
    return r;
}

bool intact(const huge_request& r) {
    const auto b = static_cast<unsigned char>(r.id);
    return r.bytes.front() == b && r.bytes[r.bytes.size() / 2] == b && r.bytes.back() == b;
}

}  // namespace

TEST_CASE("a Request larger than a thread's stack runs, retries, fails and is handed back",
          "[dispatcher][regression][unit]") {
    // Bug: run_worker kept the request it served in a std::optional on the worker's stack, so a
    // 12 MiB Request segfaulted the process as soon as the pool was constructed, before any
    // submit (it passed with ulimit -s 65536); on_failure's record was a temporary on the stack
    // too. Both now live in the worker's slot on the heap.
    static_assert(sizeof(huge_request) > (std::size_t{8} << 20));
    std::atomic<int> damaged{0};
    std::atomic<int> completed{0};
    std::mutex mutex;
    std::vector<std::pair<int, failure_reason>> failures;
    std::array<std::atomic<bool>, 16> failed_once{};
    workerpool::options<huge_request> o;
    o.capacity = 4;
    o.min_workers = 2;
    o.max_workers = 2;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = 0ns;
    o.retry.jitter = workerpool::jitter_mode::none;
    o.destructor_grace = 0ns;
    o.on_failure = [&](failure<huge_request>&& f) {
        if (!intact(f.request)) {
            damaged.fetch_add(1);
        }
        std::lock_guard lock(mutex);
        failures.emplace_back(f.request.id, f.reason);
    };
    gate hold_first;
    gate hold_second;
    std::atomic<gate*> hold{&hold_first};
    auto handler = [&](huge_request& r, const std::stop_token& st) {
        if (!intact(r)) {
            damaged.fetch_add(1);
        }
        if (r.id >= 100) {  // held until released or cancelled
            if (!hold.load()->wait(st)) {
                throw stopped_by_token{};
            }
        } else if (r.id % 3 == 2 ||
                   (r.id % 3 == 1 && !failed_once[static_cast<std::size_t>(r.id)].exchange(true))) {
            throw std::runtime_error("fails");  // 2, 5, 8 always; 1, 4, 7 once
        }
        completed.fetch_add(1);
    };
    {
        dispatcher<huge_request> pool(handler, o);
        finally release([&] { hold_first.open(); });
        for (int id = 0; id < 9; ++id) {
            REQUIRE(pool.submit(std::move(*make_huge(id))) == submit_status::accepted);
        }
        REQUIRE(pool.wait_idle_for(60s));
        const auto s = pool.stats();
        CHECK(s.completed == 6u);
        CHECK(s.failed == 3u);
        CHECK(s.retried == 6u);

        // Shutdown: two held (cancelled), two queued (handed back whole).
        for (int id = 100; id < 104; ++id) {
            REQUIRE(pool.submit(std::move(*make_huge(id))) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return hold_first.waiting() == 2; }));
        auto report = pool.shutdown(0s);
        REQUIRE(report.unprocessed.size() == 2u);
        for (const huge_request& r : report.unprocessed) {
            CHECK(r.id >= 100);
            CHECK(intact(r));
        }
    }
    {
        // The destructor dead-letters what is still queued, through its own room for the record.
        hold = &hold_second;
        // Released after the pool is gone: its destructor finds two held and two queued.
        finally release([&] { hold_second.open(); });
        dispatcher<huge_request> pool(handler, o);
        for (int id = 110; id < 114; ++id) {
            REQUIRE(pool.submit(std::move(*make_huge(id))) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return hold_second.waiting() == 2; }));
    }
    CHECK(damaged.load() == 0);
    std::lock_guard lock(mutex);
    int errors = 0;
    int cancelled = 0;
    for (const auto& [id, reason] : failures) {
        errors += reason == failure_reason::error ? 1 : 0;
        cancelled += reason == failure_reason::cancelled ? 1 : 0;
    }
    CHECK(errors == 3);
    CHECK(cancelled == 2 + 4);  // two cancelled by shutdown; four by the destructor (two ran)
}
