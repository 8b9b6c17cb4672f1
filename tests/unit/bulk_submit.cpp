// Bulk submission (issue 18 §3): try_submit_bulk takes a prefix of what it is given, as much as
// fits, and leaves the rest untouched; submit_bulk waits for room until all are in, the pool
// closes, or (from the pool's own thread) the queue is full; the ring's one-claim bulk push.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/detail/sharded_queue.hpp>
#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <new>
#include <span>
#include <stop_token>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::held_handler;
using workerpool::test::held_options;
using workerpool::test::job;
using workerpool::test::jobs;
using workerpool::test::recorder;
using workerpool::test::whole_from;

}  // namespace

TEST_CASE("try_submit_bulk takes the prefix that fits, in order, and leaves the rest untouched",
          "[dispatcher][bulk][unit]") {
    const std::size_t shards = GENERATE(1u, 3u);
    CAPTURE(shards);
    gate hold;
    recorder seen;
    auto o = held_options(6, 1);
    o.queue_shards = shards;
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{100}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));  // the worker holds request 100

    std::vector<job> batch = jobs(0, 10);
    CHECK(pool.try_submit_bulk(batch) == 6u);  // the capacity, over every ring
    for (std::size_t i = 0; i < 6; ++i) {
        CHECK(batch[i].payload == nullptr);  // moved from
    }
    CHECK(whole_from(batch, 6) == 4);
    CHECK(pool.stats().rejected == 1u);  // one call that could not take them all
    CHECK(pool.try_submit_bulk(std::span<job>(batch).subspan(6)) == 0u);  // still full
    CHECK(whole_from(batch, 6) == 4);

    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(pool.try_submit_bulk(std::span<job>(batch).subspan(6)) == 4u);
    REQUIRE(pool.wait_idle_for(30s));
    const auto s = pool.stats();
    CHECK(s.submitted == 11u);
    CHECK(s.completed == 11u);
    if (shards == 1) {  // one ring is FIFO: they ran in submit order
        CHECK(seen.ids() == std::vector<int>{100, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    }
}

TEST_CASE("bulk submits into a closed pool take nothing and touch nothing",
          "[dispatcher][bulk][shutdown][unit]") {
    dispatcher<job> pool([](job&) {}, held_options(8, 1));
    (void)pool.shutdown(1s);
    std::vector<job> batch = jobs(0, 5);
    CHECK(pool.try_submit_bulk(batch) == 0u);
    CHECK(pool.submit_bulk(batch) == 0u);
    CHECK(whole_from(batch, 0) == 5);
    CHECK(pool.stats().rejected == 0u);  // closed is not a refusal
}

TEST_CASE("submit_bulk waits for room until all are in, in order", "[dispatcher][bulk][unit]") {
    gate hold;
    recorder seen;
    auto o = held_options(4, 1);
    o.queue_shards = 1;
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    std::vector<job> batch = jobs(0, 40);
    std::atomic<std::size_t> taken{0};
    std::jthread producer([&] { taken = pool.submit_bulk(batch); });
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    hold.release(3);  // a few go through while the producer waits for room
    hold.open();
    producer.join();
    CHECK(taken.load() == 40u);
    REQUIRE(pool.wait_idle_for(30s));
    std::vector<int> expected(40);
    for (int i = 0; i < 40; ++i) {
        expected[static_cast<std::size_t>(i)] = i;
    }
    CHECK(seen.ids() == expected);
    CHECK(pool.stats().rejected == 0u);
}

TEST_CASE("submit_bulk blocked on a full queue returns what it took when shutdown begins",
          "[dispatcher][bulk][shutdown][unit]") {
    gate hold;
    recorder seen;
    auto o = held_options(4, 1);
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(job{100}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    std::vector<job> batch = jobs(0, 10);
    std::atomic<std::size_t> taken{99};
    std::jthread producer([&] { taken = pool.submit_bulk(batch); });
    REQUIRE(eventually([&] { return pool.stats().queue_depth == 4u; }));
    auto report = pool.shutdown(0s);
    producer.join();
    CHECK(taken.load() == 4u);
    CHECK(whole_from(batch, 4) == 6);
    // Every request it took is accounted for: run, failed, or handed back.
    const auto s = pool.stats();
    CHECK(s.submitted == 5u);
    CHECK(s.completed + s.failed + report.unprocessed.size() == 5u);
}

TEST_CASE("submit_bulk from one of the pool's own handlers does not wait for itself",
          "[dispatcher][bulk][unit]") {
    std::atomic<std::size_t> taken{99};
    std::atomic<int> whole{0};
    auto o = held_options(3, 1);
    std::atomic<dispatcher<job>*> self{nullptr};
    dispatcher<job> pool(
        [&](job& j) {
            if (j.id == 0) {
                std::vector<job> children = jobs(10, 5);
                taken = self.load()->submit_bulk(children);  // the queue holds 3: it fills up
                whole = whole_from(children, taken.load());
            }
        },
        o);
    self = &pool;
    REQUIRE(pool.try_submit(job{0}) == submit_status::accepted);
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(taken.load() == 3u);
    CHECK(whole.load() == 2);
    CHECK(pool.stats().completed == 4u);
    CHECK(pool.stats().rejected == 1u);
}

TEST_CASE("bounded_queue::try_emplace_bulk claims the run of free slots from the tail",
          "[bounded_queue][bulk][unit]") {
    workerpool::bounded_queue<int> q{5};
    const auto make = [](std::size_t i, void* where) noexcept {
        ::new (where) int(static_cast<int>(i));
    };
    auto r = q.try_emplace_bulk(3, make);
    CHECK(r.accepted == 3u);
    CHECK_FALSE(r.closed);
    r = q.try_emplace_bulk(9, make);  // two slots left
    CHECK(r.accepted == 2u);
    CHECK(q.try_emplace_bulk(1, make).accepted == 0u);  // full
    int out = -1;
    REQUIRE(q.try_pop(out));
    CHECK(out == 0);
    r = q.try_emplace_bulk(4, make);  // one slot freed: one more goes in, lap after lap
    CHECK(r.accepted == 1u);
    std::vector<int> order;
    while (q.try_pop(out)) {
        order.push_back(out);
    }
    CHECK(order == std::vector<int>{1, 2, 0, 1, 0});
    (void)q.close();
    r = q.try_emplace_bulk(2, make);
    CHECK(r.accepted == 0u);
    CHECK(r.closed);
}

TEST_CASE("bounded_queue::try_emplace_bulk runs that cross the ring's end keep their order, lap "
          "after lap",
          "[bounded_queue][bulk][unit]") {
    // Runs of 5 into 7 slots start at every index in turn, and most cross the end: each slot's
    // index and lap must follow the run (a lap missed there stops the run early; an index past
    // the end writes outside the ring).
    workerpool::bounded_queue<int> q{7};
    int next = 0;
    int expected = 0;
    int out_of_order = 0;
    for (int round = 0; round < 40; ++round) {
        const auto r = q.try_emplace_bulk(5, [next](std::size_t i, void* where) noexcept {
            ::new (where) int(next + static_cast<int>(i));
        });
        REQUIRE(r.accepted == 5u);
        next += 5;
        int out = -1;
        while (q.try_pop(out)) {
            out_of_order += out == expected ? 0 : 1;
            ++expected;
        }
    }
    CHECK(expected == next);
    CHECK(out_of_order == 0);
}

TEST_CASE("a bulk into rings that close part-way reports what went in, and that it met the close",
          "[sharded_queue][bulk][unit]") {
    // Two rings of two. The queue closes while the home ring's elements are built: they are in
    // (claimed before the close), the other ring refuses, and the result says closed, not full:
    // the pool counts a bulk that stopped at a closed queue as no refusal.
    workerpool::detail::sharded_queue<int> q{4, 2};
    const auto r = q.try_emplace_bulk(4, [&q](std::size_t i, void* where) noexcept {
        ::new (where) int(static_cast<int>(i));
        if (i == 1) {
            (void)q.close();
        }
    });
    CHECK(r.accepted == 2u);
    CHECK(r.closed);
    int out = -1;
    CHECK(q.consume(0, [&out](int&& v) noexcept { out = v; }));
    CHECK(q.consume(0, [&out](int&& v) noexcept { out = v; }));
    CHECK(out == 1);
    CHECK_FALSE(q.consume(0, [&out](int&& v) noexcept { out = v; }));
}

TEST_CASE("bulk submits of many producers each take a prefix, and every request taken ends once",
          "[dispatcher][bulk][unit]") {
    // Four producers push bulks of 1 to 9 into a small sharded queue with try_submit_bulk; each
    // keeps what was refused and offers it again. Every request runs exactly once.
    constexpr int producers = 4;
    constexpr int per_producer = 2000;
    std::vector<std::atomic<int>> runs(static_cast<std::size_t>(producers * per_producer));
    workerpool::options<job> o;
    o.capacity = 16;
    o.queue_shards = 4;
    o.min_workers = 2;
    o.max_workers = 2;
    {
        dispatcher<job> pool([&runs](job& j) { runs[static_cast<std::size_t>(j.id)].fetch_add(1); },
                             o);
        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&pool, p] {
                std::vector<job> mine = jobs(p * per_producer, per_producer);
                std::size_t next = 0;
                while (next < mine.size()) {
                    const std::size_t want =
                        std::min<std::size_t>(mine.size() - next, 1 + next % 9);
                    const std::size_t took =
                        pool.try_submit_bulk(std::span<job>(mine).subspan(next, want));
                    next += took;
                    if (took == 0) {
                        std::this_thread::yield();
                    }
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        CHECK(pool.wait_idle_for(30s));
    }
    int wrong = 0;
    for (const auto& r : runs) {
        wrong += r.load() == 1 ? 0 : 1;
    }
    CHECK(wrong == 0);
}
