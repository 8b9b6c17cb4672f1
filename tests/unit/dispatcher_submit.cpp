// Submission (issue 2): try_submit / submit / submit_for answers, refused requests left untouched,
// back-pressure that blocks and releases, blocked submitters woken by shutdown, and the stats
// that submission and a held pool make exact. Handlers only record; assertions run on the test
// thread, after a gate or a shutdown has ordered what the handlers wrote.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::held_options;
using workerpool::test::job;
using workerpool::test::recorder;
using workerpool::test::stopped_by_token;
using workerpool::test::submitter;
using workerpool::test::this_tid;
using workerpool::test::untouched;

}  // namespace

TEST_CASE("a new dispatcher starts exactly min_workers workers", "[dispatcher][unit]") {
    auto o = held_options(8, 3);
    o.max_workers = 6;
    dispatcher<job> pool([](job&) {}, o);
    CHECK(pool.worker_count() == 3u);
    CHECK(pool.stats().workers == 3u);
    CHECK(pool.capacity() == 8u);
    CHECK(pool.stats().capacity == 8u);
}

TEST_CASE("try_submit with room returns accepted, moves the request and runs it",
          "[dispatcher][unit]") {
    recorder seen;
    dispatcher<job> pool([&](job& j, std::stop_token) { seen.add(*j.payload); },
                         held_options(4, 1));
    job j{7};
    REQUIRE(pool.try_submit(std::move(j)) == submit_status::accepted);
    CHECK(j.payload == nullptr);  // NOLINT(bugprone-use-after-move): moved from when accepted
    const auto report = pool.shutdown(10s);
    CHECK(report.drained);
    CHECK(report.unprocessed.empty());
    CHECK(seen.ids() == std::vector<int>{70});
    CHECK(pool.stats().completed == 1u);
    CHECK(pool.stats().submitted == 1u);
}

// Request ids in the order they ran; sorted when the queue has several rings, which keep no
// order across rings.
std::vector<int> ran(recorder& seen, std::size_t shards) {
    std::vector<int> ids = seen.ids();
    if (shards > 1) {
        std::sort(ids.begin(), ids.end());
    }
    return ids;
}

TEST_CASE("try_submit on a full queue returns full and leaves the request untouched",
          "[dispatcher][unit]") {
    const std::size_t shards = GENERATE(1u, 2u);  // with 2 rings the second push spills over
    CAPTURE(shards);
    gate hold;
    recorder seen;
    auto o = held_options(2, 1);
    o.queue_shards = shards;
    dispatcher<job> pool(
        [&](job& j, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
            seen.add(j.id);
        },
        o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));  // the worker holds request 0
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);

    job refused{3};
    CHECK(pool.try_submit(std::move(refused)) == submit_status::full);
    CHECK(untouched(refused, 3));  // NOLINT(bugprone-use-after-move): refused, so untouched
    CHECK(pool.try_submit(std::move(refused)) == submit_status::full);
    CHECK(untouched(refused, 3));  // NOLINT(bugprone-use-after-move)
    CHECK(pool.stats().rejected == 2u);
    CHECK(pool.stats().submitted == 3u);

    hold.open();
    const auto report = pool.shutdown(10s);
    CHECK(report.drained);
    CHECK(ran(seen, shards) == std::vector<int>{0, 1, 2});
    CHECK(pool.stats().completed == 3u);
}

TEST_CASE("every submit variant returns closed after shutdown and leaves the request untouched",
          "[dispatcher][shutdown][unit]") {
    std::atomic<int> calls{0};
    dispatcher<job> pool([&](job&) { calls.fetch_add(1); }, held_options(4, 1));
    (void)pool.shutdown(1s);
    // NOLINTBEGIN(bugprone-use-after-move): a refused request is untouched, so reuse is fine
    job j{5};
    CHECK(pool.try_submit(std::move(j)) == submit_status::closed);
    CHECK(untouched(j, 5));
    CHECK(pool.submit(std::move(j)) == submit_status::closed);
    CHECK(untouched(j, 5));
    CHECK(pool.submit_for(std::move(j), 1s) == submit_status::closed);
    CHECK(untouched(j, 5));
    // NOLINTEND(bugprone-use-after-move)
    const auto s = pool.stats();
    CHECK(s.submitted == 0u);
    CHECK(s.rejected == 0u);  // `closed` is not a rejection for lack of room
    CHECK(calls.load() == 0);
}

TEST_CASE("submit blocks while the queue is full and is accepted once a worker frees slots",
          "[dispatcher][backpressure][unit]") {
    const std::size_t shards = GENERATE(1u, 2u);  // full means every ring is full
    CAPTURE(shards);
    gate hold;
    recorder seen;
    auto o = held_options(2, 1);
    o.queue_shards = shards;
    dispatcher<job> pool(
        [&](job& j, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
            seen.add(j.id);
        },
        o);
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);  // exactly full now

    submitter sub;
    std::jthread thread([&] {
        sub.tid = this_tid();
        job j{3};
        sub.result = pool.submit(std::move(j));
        sub.request_untouched = untouched(j, 3);  // NOLINT(bugprone-use-after-move)
        sub.done = true;
    });
    finally cleanup([&] {
        hold.open();
        (void)pool.shutdown(0s);  // wakes the submitter with `closed` if a REQUIRE failed
    });

    REQUIRE(sub.blocked());  // asleep in submit: the queue is full
    CHECK(pool.stats().queue_depth == 2u);

    hold.open();  // the worker drains, freeing slots
    REQUIRE(eventually([&] { return sub.done.load(); }));
    CHECK(sub.result.load() == submit_status::accepted);
    CHECK_FALSE(sub.request_untouched.load());  // accepted, so moved from

    const auto report = pool.shutdown(10s);
    CHECK(report.drained);
    CHECK(ran(seen, shards) == std::vector<int>{0, 1, 2, 3});
    CHECK(pool.stats().rejected == 0u);
}

TEST_CASE("submit_for on a full queue returns full after its timeout with the request untouched",
          "[dispatcher][backpressure][unit]") {
    gate hold;
    dispatcher<job> pool(
        [&](job&, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
        },
        held_options(2, 1));
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);

    job j{3};
    const auto start = clock_type::now();
    const submit_status s = pool.submit_for(std::move(j), 30ms);
    const auto waited = clock_type::now() - start;
    CHECK(s == submit_status::full);
    CHECK(untouched(j, 3));  // NOLINT(bugprone-use-after-move): refused, so untouched
    CHECK(waited >= 30ms);
    CHECK(waited < 5s);
    CHECK(pool.stats().rejected == 1u);

    // A zero or negative timeout tries once and does not wait.
    CHECK(pool.submit_for(std::move(j), 0ms) == submit_status::full);
    CHECK(pool.submit_for(std::move(j), -5ms) == submit_status::full);
    CHECK(untouched(j, 3));  // NOLINT(bugprone-use-after-move)
    CHECK(pool.stats().rejected == 3u);

    hold.open();
    CHECK(pool.shutdown(10s).drained);
    CHECK(pool.stats().completed == 3u);
}

TEST_CASE("submit_for is accepted when a slot frees before its timeout",
          "[dispatcher][backpressure][unit]") {
    gate hold;
    dispatcher<job> pool(
        [&](job&, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
        },
        held_options(2, 1));
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);

    submitter sub;
    std::jthread thread([&] {
        sub.tid = this_tid();
        job j{3};
        sub.result = pool.submit_for(std::move(j), 60s);
        sub.done = true;
    });
    finally cleanup([&] {
        hold.open();
        (void)pool.shutdown(0s);
    });
    REQUIRE(sub.blocked());
    hold.open();
    REQUIRE(eventually([&] { return sub.done.load(); }));
    CHECK(sub.result.load() == submit_status::accepted);
    CHECK(pool.shutdown(10s).drained);
    CHECK(pool.stats().completed == 4u);
}

TEST_CASE("blocked submitters wake with closed when shutdown starts, requests untouched",
          "[dispatcher][backpressure][shutdown][unit]") {
    gate hold;
    std::atomic<int> completed{0};
    dispatcher<job> pool(
        [&](job&, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
            completed.fetch_add(1);
        },
        held_options(2, 1));
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);

    submitter blocking;
    submitter timed;
    std::jthread t1([&] {
        blocking.tid = this_tid();
        job j{10};
        blocking.result = pool.submit(std::move(j));
        blocking.request_untouched = untouched(j, 10);  // NOLINT(bugprone-use-after-move)
        blocking.done = true;
    });
    std::jthread t2([&] {
        timed.tid = this_tid();
        job j{11};
        timed.result = pool.submit_for(std::move(j), 60s);
        timed.request_untouched = untouched(j, 11);  // NOLINT(bugprone-use-after-move)
        timed.done = true;
    });
    std::atomic<bool> shutdown_done{false};
    workerpool::shutdown_report<job> report;
    std::jthread closer;
    finally cleanup([&] {
        hold.open();
        if (!closer.joinable()) {
            (void)pool.shutdown(0s);
        }
    });
    REQUIRE(blocking.blocked());
    REQUIRE(timed.blocked());

    // The worker stays held, so this shutdown waits out its (long) grace: the submitters must be
    // woken by the start of shutdown, not by its end.
    closer = std::jthread([&] {
        report = pool.shutdown(60s);
        shutdown_done = true;
    });
    REQUIRE(eventually([&] { return blocking.done.load() && timed.done.load(); }));
    CHECK_FALSE(shutdown_done.load());
    CHECK(blocking.result.load() == submit_status::closed);
    CHECK(timed.result.load() == submit_status::closed);
    CHECK(blocking.request_untouched.load());
    CHECK(timed.request_untouched.load());

    hold.open();
    closer.join();
    CHECK(report.drained);
    CHECK(report.unprocessed.empty());
    CHECK(completed.load() == 3);
    const auto s = pool.stats();
    CHECK(s.submitted == 3u);
    CHECK(s.completed == 3u);
    CHECK(s.rejected == 0u);
}

TEST_CASE("submit from a handler of the same pool returns full instead of blocking on itself",
          "[dispatcher][backpressure][unit]") {
    std::atomic<int> inner_result{-1};
    std::atomic<int> inner_untouched{0};
    std::atomic<int> outer_done{0};
    gate hold;
    dispatcher<job>* self = nullptr;
    dispatcher<job> pool(
        [&](job& j, std::stop_token st) {
            if (j.id == 0) {
                // Request 0 runs while 1 and 2 fill the queue, then submits to its own pool.
                if (!hold.wait(st)) {
                    throw stopped_by_token{};
                }
                job inner{99};
                inner_result = static_cast<int>(self->submit(std::move(inner)));
                inner_untouched = untouched(inner, 99) ? 1 : 0;  // NOLINT(bugprone-use-after-move)
                outer_done = 1;
            }
        },
        held_options(2, 1));
    self = &pool;  // published to the worker by the queue's push (release) / pop (acquire)
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{2}) == submit_status::accepted);
    hold.release(1);
    REQUIRE(eventually([&] { return outer_done.load() == 1; }));
    CHECK(inner_result.load() == static_cast<int>(submit_status::full));
    CHECK(inner_untouched.load() == 1);
    CHECK(pool.shutdown(10s).drained);
    CHECK(pool.stats().completed == 3u);
}

TEST_CASE("stats are exact while a gate holds the workers", "[dispatcher][stats][unit]") {
    gate hold;
    auto o = held_options(8, 2);
    o.scale_up_depth = 64;  // the scaler has no reason to act
    dispatcher<job> pool(
        [&](job&, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
        },
        o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(pool.try_submit(job{1}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 2; }));  // both workers busy

    for (int i = 2; i < 7; ++i) {
        REQUIRE(pool.submit(job{i}) == submit_status::accepted);
    }
    auto s = pool.stats();
    CHECK(s.submitted == 7u);
    CHECK(s.queue_depth == 5u);
    CHECK(s.in_flight == 2u);
    CHECK(s.workers == 2u);
    CHECK(s.idle == 0u);
    CHECK(s.completed == 0u);
    CHECK(s.failed == 0u);
    CHECK(s.rejected == 0u);
    CHECK(s.capacity == 8u);

    for (int i = 7; i < 10; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);
    }
    CHECK(pool.try_submit(job{10}) == submit_status::full);
    CHECK(pool.submit_for(job{11}, 1ms) == submit_status::full);
    s = pool.stats();
    CHECK(s.queue_depth == 8u);
    CHECK(s.submitted == 10u);
    CHECK(s.rejected == 2u);

    hold.release(3);  // exactly three requests finish; then two workers hold again
    REQUIRE(eventually([&] { return pool.stats().completed == 3u && hold.waiting() == 2; }));
    s = pool.stats();
    CHECK(s.completed == 3u);
    CHECK(s.queue_depth == 5u);
    CHECK(s.in_flight == 2u);

    hold.open();
    CHECK(pool.shutdown(10s).drained);
    s = pool.stats();
    CHECK(s.completed == 10u);
    CHECK(s.failed == 0u);
    CHECK(s.retried == 0u);
    CHECK(s.queue_depth == 0u);
    CHECK(s.in_flight == 0u);
    CHECK(s.workers == 0u);
    CHECK(pool.worker_count() == 0u);
}

TEST_CASE("a handler taking only Request& is called once per request", "[dispatcher][unit]") {
    std::atomic<int> sum{0};
    std::atomic<int> calls{0};
    dispatcher<int> pool(
        [&](int& v) {
            sum.fetch_add(v);
            calls.fetch_add(1);
        },
        [] {
            workerpool::options<int> o;
            o.capacity = 16;
            o.min_workers = 2;
            o.max_workers = 2;
            return o;
        }());
    for (int i = 1; i <= 10; ++i) {
        REQUIRE(pool.submit(int{i}) == submit_status::accepted);
    }
    CHECK(pool.shutdown(10s).drained);
    CHECK(calls.load() == 10);
    CHECK(sum.load() == 55);
}

TEST_CASE("a function object with a const call operator serves as a handler",
          "[dispatcher][unit]") {
    struct counting_handler {
        std::atomic<int>* calls;
        void operator()(int&, std::stop_token) const { calls->fetch_add(1); }
    };
    std::atomic<int> calls{0};
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = 1;
    dispatcher<int> pool(counting_handler{&calls}, o);
    REQUIRE(pool.try_submit(1) == submit_status::accepted);
    CHECK(pool.shutdown(10s).drained);
    CHECK(calls.load() == 1);
}

TEST_CASE("requests submitted from several threads each run exactly once",
          "[dispatcher][backpressure][unit]") {
    const std::size_t shards = GENERATE(1u, 2u, 4u);
    CAPTURE(shards);
    constexpr int producers = 4;
    constexpr int per_producer = 500;
    std::vector<std::atomic<int>> runs(producers * per_producer);
    auto o = held_options<int>(8, 2);  // a small queue, so submitters block often
    o.queue_shards = shards;
    dispatcher<int> pool([&](int& id) { runs[static_cast<std::size_t>(id)].fetch_add(1); }, o);
    std::atomic<int> not_accepted{0};
    {
        std::vector<std::jthread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                for (int i = 0; i < per_producer; ++i) {
                    if (pool.submit(p * per_producer + i) != submit_status::accepted) {
                        not_accepted.fetch_add(1);
                    }
                }
            });
        }
    }
    const auto report = pool.shutdown(30s);
    CHECK(report.drained);
    CHECK(not_accepted.load() == 0);
    const auto s = pool.stats();
    CHECK(s.submitted == std::uint64_t{producers * per_producer});
    CHECK(s.completed == std::uint64_t{producers * per_producer});
    CHECK(std::all_of(runs.begin(), runs.end(), [](const std::atomic<int>& n) { return n == 1; }));
}

TEST_CASE("with several rings, one thread's requests start in submit order while its ring has room",
          "[dispatcher][unit]") {
    recorder seen;
    auto o = held_options<int>(64, 1);  // 4 rings of 16: the 10 requests fit in one
    o.queue_shards = 4;
    dispatcher<int> pool([&](int& id) { seen.add(id); }, o);
    CHECK(pool.capacity() == 64u);
    for (int i = 0; i < 10; ++i) {
        REQUIRE(pool.submit(int{i}) == submit_status::accepted);
    }
    CHECK(pool.shutdown(10s).drained);
    CHECK(seen.ids() == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
}

TEST_CASE("with more rings than workers, a ring that is never empty does not starve the others",
          "[dispatcher][unit]") {
    // One worker, two rings. The worker's own handler keeps the ring it starts its pops at busy:
    // each request of a chain submits the next, from the worker thread, into that thread's home
    // ring. One request waits meanwhile in the other ring. It must run long before the chain
    // ends. Homes go round each queue's rings in the order threads first push (0, 1, 0, ...), so
    // the test arranges who pushes first to put the chain and the waiting request where it
    // wants them. (The lone worker starts at ring 0, its seat; its id, 0, says the same.)
    constexpr int generations = 500;
    constexpr int held = -1;
    constexpr int waiting = 1001;
    constexpr int filler = 2000;  // pushed only to take a home; runs early and harmlessly
    gate hold;
    recorder seen;
    std::atomic<int> refused{0};  // submits from the worker or a helper thread that failed
    std::atomic<std::size_t> worker_id{~std::size_t{0}};
    dispatcher<int>* self = nullptr;
    auto o = held_options<int>(8, 1);
    o.queue_shards = 2;
    o.on_worker_start = [&worker_id](std::size_t id) { worker_id.store(id); };
    dispatcher<int> pool(
        [&](int& id, std::stop_token st) {
            if (id == held) {
                if (!hold.wait(st)) {
                    throw stopped_by_token{};
                }
                // The worker thread's first push: the chain starts in its home ring.
                if (self->try_submit(int{0}) != submit_status::accepted) {
                    refused.fetch_add(1);
                }
                return;
            }
            seen.add(id);
            if (id >= 0 && id < generations &&
                self->try_submit(int{id + 1}) != submit_status::accepted) {
                refused.fetch_add(1);
            }
        },
        o);
    self = &pool;
    finally release([&] { hold.open(); });
    const auto push_from_new_thread = [&pool, &refused](int id) {
        std::jthread([&pool, &refused, id] {
            if (pool.submit(int{id}) != submit_status::accepted) {
                refused.fetch_add(1);
            }
        }).join();
    };
    REQUIRE(pool.submit(int{held}) == submit_status::accepted);  // this thread: home 0
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));    // the worker holds the gate
    REQUIRE(worker_id.load() != ~std::size_t{0});
    // The worker starts its pops at ring `start` (for its first 32 pops); the chain must be there.
    const std::size_t start = worker_id.load() % 2;
    std::size_t next_home = 1;
    int fillers = 0;
    if (start == 1) {  // home 1 would put the waiting request in the chain's ring: fill it
        push_from_new_thread(filler);
        ++fillers;
        ++next_home;
    }
    push_from_new_thread(waiting);  // lands in ring 1 - start
    ++next_home;
    REQUIRE(next_home % 2 == start);  // so the worker thread's home, taken next, is `start`
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(refused.load() == 0);
    const std::vector<int> ids = seen.ids();
    REQUIRE(ids.size() == std::size_t{generations + 2} + static_cast<std::size_t>(fillers));
    const auto at = [&ids](int id) { return std::find(ids.begin(), ids.end(), id) - ids.begin(); };
    CHECK(at(waiting) < at(100));
    CHECK(pool.shutdown(10s).drained);
}

namespace {

// Which worker thread ran which request id, in the order they ran.
class ran_by {
public:
    // Records `id` for this thread; returns how many this thread has run.
    std::size_t add(int id) {
        std::lock_guard lock(mutex_);
        runs_.emplace_back(std::this_thread::get_id(), id);
        return static_cast<std::size_t>(
            std::count_if(runs_.begin(), runs_.end(),
                          [](const auto& r) { return r.first == std::this_thread::get_id(); }));
    }
    // The ids worker `t` ran, in order.
    std::vector<int> of(std::thread::id t) {
        std::lock_guard lock(mutex_);
        std::vector<int> ids;
        for (const auto& [who, id] : runs_) {
            if (who == t) {
                ids.push_back(id);
            }
        }
        return ids;
    }
    // The workers that ran requests, in the order of their first.
    std::vector<std::thread::id> workers() {
        std::lock_guard lock(mutex_);
        std::vector<std::thread::id> out;
        for (const auto& [who, id] : runs_) {
            if (std::find(out.begin(), out.end(), who) == out.end()) {
                out.push_back(who);
            }
        }
        return out;
    }

private:
    std::mutex mutex_;
    std::vector<std::pair<std::thread::id, int>> runs_;
};

// Two workers and two rings of 128. `held` requests wait at `hold` (and are not recorded); the
// others are recorded with the worker that ran them, and with `pause` a worker waits there after
// its 31st.
constexpr int held_id = -1;
constexpr int pin_id = -2;  // waits at the pin gate on worker 0 only
thread_local std::size_t this_worker_id = ~std::size_t{0};
auto two_ring_options() {
    auto o = held_options<int>(256, 2);
    o.queue_shards = 2;
    o.scale_interval = std::chrono::hours(1);  // the workers are moved by hand only
    return o;
}
auto ring_recording(gate& hold, ran_by& ran, gate* pause = nullptr, gate* pin = nullptr) {
    return [&hold, &ran, pause, pin](int& id, std::stop_token st) {
        if (id == held_id || (id == pin_id && pin != nullptr && this_worker_id == 0)) {
            if (!(id == held_id ? hold : *pin).wait(st)) {
                throw stopped_by_token{};
            }
            return;
        }
        if (id == pin_id) {
            return;  // for worker 0 only
        }
        if (ran.add(id) == 31 && pause != nullptr && !pause->wait(st)) {
            throw stopped_by_token{};
        }
    };
}

// Pushes 96 requests into each ring: 0, 1, ... from this thread (home ring 0, being the pool's
// first pusher) and 1000, 1001, ... from a new thread (home ring 1). Returns how many were refused.
int fill_both_rings(dispatcher<int>& pool) {
    std::atomic<int> refused{0};
    for (int i = 0; i < 96; ++i) {
        refused += pool.submit(int{i}) == submit_status::accepted ? 0 : 1;
    }
    std::jthread([&pool, &refused] {
        for (int i = 0; i < 96; ++i) {
            refused += pool.submit(1000 + i) == submit_status::accepted ? 0 : 1;
        }
    }).join();
    return refused.load();
}

// How many of the first `n` of `ids` came from ring 0 (ids below 1000).
long from_ring_0(const std::vector<int>& ids, std::size_t n) {
    return std::count_if(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n),
                         [](int id) { return id < 1000; });
}

}  // namespace

TEST_CASE("with as many workers as rings, a worker takes from its own ring while it has work, and "
          "from the other once in 32 pops",
          "[dispatcher][unit]") {
    // One of the two workers stays held; the other pops alone, 96 requests waiting in each ring.
    // Two workers that each keep to a ring of their own do not write each other's ring index
    // while both have work; a worker that moved its start every 32 pops took half from each.
    gate hold;
    ran_by ran;
    dispatcher<int> pool(ring_recording(hold, ran), two_ring_options());
    finally release([&] { hold.open(); });
    REQUIRE(pool.submit(int{held_id}) == submit_status::accepted);
    REQUIRE(pool.submit(int{held_id}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 2; }));
    REQUIRE(fill_both_rings(pool) == 0);
    hold.release(1);  // one worker goes on: its held request was its first pop
    REQUIRE(eventually(
        [&] { return ran.workers().size() == 1 && ran.of(ran.workers()[0]).size() >= 64; }));
    const std::vector<int> ids = ran.of(ran.workers()[0]);
    // Its pops 2 to 65: 62 from its own ring, and pops 33 and 65 from the other.
    const long own_0 = from_ring_0(ids, 64);
    CHECK((own_0 == 62 || own_0 == 2));
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(pool.shutdown(10s).drained);
}

TEST_CASE("with fewer workers than rings, a worker goes round its share of the rings, 32 pops at "
          "a time",
          "[dispatcher][unit]") {
    // One worker, two rings, 96 requests waiting in each: the worker's share is both rings. A
    // worker that stayed at its first ring would take the other's only on visits.
    gate hold;
    ran_by ran;
    auto o = two_ring_options();
    o.min_workers = 1;
    o.max_workers = 1;
    dispatcher<int> pool(ring_recording(hold, ran), o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.submit(int{held_id}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(fill_both_rings(pool) == 0);
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    const auto workers = ran.workers();
    REQUIRE(workers.size() == 1u);
    const std::vector<int> ids = ran.of(workers[0]);
    REQUIRE(ids.size() == 192u);
    // Its pops 2 to 65: 32 from each ring (31 at home and a visit, then the same the other way).
    CHECK(from_ring_0(ids, 64) == 32);
    CHECK(pool.shutdown(10s).drained);
}

TEST_CASE(
    "after the pool shrinks and grows again, each of its workers again keeps to a ring of its "
    "own",
    "[dispatcher][scaling][unit]") {
    // Worker ids only grow. Keep worker 0 busy, remove worker 1 (the idle one goes) and add
    // worker 2: a home of `id % rings` would put both on ring 0 and leave ring 1 to the visits.
    // Each ring must have its own worker again (worker_set's seats).
    gate hold;
    gate pause;
    gate pin;
    ran_by ran;
    std::mutex ids_mutex;
    std::vector<std::size_t> live_ids;
    auto o = two_ring_options();
    o.on_worker_start = [&](std::size_t id) {
        this_worker_id = id;
        std::lock_guard lock(ids_mutex);
        live_ids.push_back(id);
    };
    o.on_worker_stop = [&](std::size_t id) {
        std::lock_guard lock(ids_mutex);
        live_ids.erase(std::find(live_ids.begin(), live_ids.end(), id));
    };
    const auto ids_now = [&] {
        std::lock_guard lock(ids_mutex);
        return live_ids;
    };
    dispatcher<int> pool(ring_recording(hold, ran, &pause, &pin), o);
    finally release([&] {
        pin.open();
        pause.open();
        hold.open();
    });
    REQUIRE(eventually([&] { return ids_now().size() == 2; }));
    // Pin requests until worker 0 holds one (worker 1 lets them through).
    for (int tries = 0; tries < 20000 && pin.waiting() == 0; ++tries) {
        REQUIRE(pool.submit(int{pin_id}) == submit_status::accepted);
        (void)eventually([&] { return pin.waiting() == 1 || pool.stats().queue_depth == 0; });
    }
    REQUIRE(pin.waiting() == 1);
    pool.set_worker_limits(1, 2);
    REQUIRE(pool.remove_worker());  // the idle one: worker 1
    REQUIRE(eventually([&] { return ids_now() == std::vector<std::size_t>{0}; }));
    REQUIRE(pool.add_worker());
    REQUIRE(eventually([&] { return ids_now() == std::vector<std::size_t>{0, 2}; }));
    pin.open();
    REQUIRE(pool.wait_idle_for(30s));

    // Each worker pops its held request, then 31 more from its home ring, and waits at `pause`:
    // one at a time, so that neither empties a ring the other would then have to take from.
    REQUIRE(pool.submit(int{held_id}) == submit_status::accepted);
    REQUIRE(pool.submit(int{held_id}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 2; }));
    REQUIRE(fill_both_rings(pool) == 0);
    hold.release(1);
    REQUIRE(eventually([&] { return pause.waiting() == 1; }));
    hold.release(1);
    REQUIRE(eventually([&] { return pause.waiting() == 2; }));
    const auto workers = ran.workers();
    REQUIRE(workers.size() == 2);
    const std::vector<int> first = ran.of(workers[0]);
    const std::vector<int> second = ran.of(workers[1]);
    REQUIRE(first.size() == 31u);
    REQUIRE(second.size() == 31u);
    const long first_0 = from_ring_0(first, 31);
    const long second_0 = from_ring_0(second, 31);
    // Each from its own ring but for a visit (worker 0's count of pops began with the pins), and
    // not the same one.
    CHECK((first_0 <= 1 || first_0 >= 30));
    CHECK((second_0 <= 1 || second_0 >= 30));
    CHECK((first_0 >= 30) != (second_0 >= 30));
    pause.open();
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(pool.shutdown(10s).drained);
}

TEST_CASE("a blocked submit waits for a batch of free slots only briefly, then takes one",
          "[dispatcher][backpressure][unit]") {
    // A producer facing a full queue first polls for a batch of free slots (a quarter of its
    // ring, here 16 of 64) for at most min(spin_before_sleep / 4, 10 us), then for any one slot.
    // With spin_before_sleep at 10 s it never sleeps during this test, so only that fallback can
    // let it take the single slot that frees: without it the submit would spin for 10 s.
    gate hold;
    std::atomic<int> completed{0};
    auto o = held_options(64, 1);
    o.queue_shards = 1;
    o.spin_before_sleep = 10s;
    dispatcher<job> pool(
        [&](job& j, std::stop_token st) {
            if (!hold.wait(st)) {
                throw stopped_by_token{};
            }
            static_cast<void>(j);
            completed.fetch_add(1);
        },
        o);
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    for (int i = 1; i <= 64; ++i) {
        REQUIRE(pool.try_submit(job{i}) == submit_status::accepted);  // full: 64 of 64
    }
    std::atomic<bool> done{false};
    std::atomic<submit_status> result{submit_status::closed};
    std::jthread producer([&] {
        result.store(pool.submit(job{65}));
        done.store(true);
    });
    finally cleanup([&] {
        hold.open();
        (void)pool.shutdown(0s);
    });
    std::this_thread::sleep_for(20ms);
    REQUIRE_FALSE(done.load());  // no slot free: it polls

    const auto freed = clock_type::now();
    hold.release(1);  // request 0 ends; the worker takes request 1 and holds it: one slot free
    CHECK(eventually([&] { return done.load(); }, 3s));
    CHECK(clock_type::now() - freed < 3s);
    CHECK(result.load() == submit_status::accepted);
    CHECK(completed.load() == 1);
    CHECK(pool.stats().queue_depth == 64u);  // requests 2 to 65; 1 is held
}
