// bounded_queue on its own: capacity, FIFO order, full and closed refusals that leave the value
// untouched, draining after close, destruction of what is still queued, the room hint
// (has_room_for), and a small MPMC run.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/status.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using workerpool::bounded_queue;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::gate;
using workerpool::test::tracked;

}  // namespace

TEST_CASE("bounded_queue reports its exact capacity", "[bounded_queue][unit]") {
    const bounded_queue<int> q{3};
    CHECK(q.capacity() == 3u);
    CHECK(q.approx_size() == 0u);
    CHECK(q.free_slots() == 3u);
    CHECK_FALSE(q.is_closed());
}

TEST_CASE("bounded_queue rejects a zero capacity", "[bounded_queue][unit]") {
    CHECK_THROWS_AS(bounded_queue<int>{0}, std::invalid_argument);
}

TEST_CASE("bounded_queue pops in FIFO order", "[bounded_queue][unit]") {
    bounded_queue<int> q{4};
    for (int i = 1; i <= 4; ++i) {
        REQUIRE(q.try_push(int{i}) == submit_status::accepted);
    }
    CHECK(q.approx_size() == 4u);
    for (int i = 1; i <= 4; ++i) {
        int out = 0;
        REQUIRE(q.try_pop(out));
        CHECK(out == i);
    }
    int out = 0;
    CHECK_FALSE(q.try_pop(out));
}

TEST_CASE("try_push on a full bounded_queue returns full and leaves the value untouched",
          "[bounded_queue][unit]") {
    tracked::reset();
    {
        bounded_queue<tracked> q{2};
        REQUIRE(q.try_push(tracked{1}) == submit_status::accepted);
        REQUIRE(q.try_push(tracked{2}) == submit_status::accepted);

        // A refused push leaves its argument untouched, so `third` is used after std::move on
        // purpose. NOLINTBEGIN(bugprone-use-after-move)
        tracked third{3};
        CHECK(q.try_push(std::move(third)) == submit_status::full);
        CHECK_FALSE(third.moved_from);
        CHECK(third.id == 3);
        CHECK(q.free_slots() == 0u);

        tracked out;
        REQUIRE(q.try_pop(out));
        CHECK(out.id == 1);
        CHECK(q.try_push(std::move(third)) == submit_status::accepted);
        CHECK(third.moved_from);  // accepted, so moved from
        // NOLINTEND(bugprone-use-after-move)
    }
    CHECK(tracked::live == 0);
    CHECK(tracked::misuse == 0);
}

TEST_CASE("close refuses later pushes but lets queued elements drain", "[bounded_queue][unit]") {
    bounded_queue<int> q{4};
    REQUIRE(q.try_push(7) == submit_status::accepted);
    REQUIRE(q.try_push(8) == submit_status::accepted);

    CHECK(q.close() == 2u);
    CHECK(q.is_closed());
    CHECK(q.close() == 2u);  // idempotent
    CHECK(q.try_push(9) == submit_status::closed);

    int out = 0;
    REQUIRE(q.try_pop(out));
    CHECK(out == 7);
    REQUIRE(q.try_pop(out));
    CHECK(out == 8);
    CHECK_FALSE(q.try_pop(out));
}

TEST_CASE("bounded_queue destroys the elements still queued", "[bounded_queue][unit]") {
    tracked::reset();
    {
        bounded_queue<tracked> q{8};
        for (int i = 0; i < 5; ++i) {
            REQUIRE(q.try_push(tracked{i}) == submit_status::accepted);
        }
        tracked out;
        REQUIRE(q.try_pop(out));
        CHECK(tracked::live == 5);  // four queued plus `out`
    }
    CHECK(tracked::live == 0);
    CHECK(tracked::misuse == 0);
}

TEST_CASE("bounded_queue hands every element to exactly one consumer", "[bounded_queue][unit]") {
    constexpr int per_producer = 2000;
    constexpr int producers = 2;
    constexpr int consumers = 2;
    bounded_queue<int> q{16};
    gate start;
    std::atomic<std::int64_t> sum{0};
    std::atomic<int> popped{0};
    {
        std::vector<std::jthread> threads;
        threads.reserve(producers + consumers);
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&q, &start, p] {
                start.wait();
                for (int i = 1; i <= per_producer;) {
                    const int value = p * per_producer + i;
                    if (q.try_push(int{value}) == submit_status::accepted) {
                        ++i;
                    } else {
                        std::this_thread::yield();
                    }
                }
            });
        }
        for (int c = 0; c < consumers; ++c) {
            threads.emplace_back([&q, &start, &sum, &popped] {
                start.wait();
                while (popped.load(std::memory_order_relaxed) < producers * per_producer) {
                    int out = 0;
                    if (q.try_pop(out)) {
                        sum.fetch_add(out, std::memory_order_relaxed);
                        popped.fetch_add(1, std::memory_order_relaxed);
                    } else {
                        std::this_thread::yield();
                    }
                }
            });
        }
        const bool all_waiting =
            eventually([&] { return start.waiting() == std::size_t{producers + consumers}; });
        start.open();  // before any REQUIRE, so that a failure cannot leave the threads parked
        REQUIRE(all_waiting);
    }  // the jthreads join here
    constexpr std::int64_t n = std::int64_t{producers} * per_producer;
    CHECK(popped.load() == producers * per_producer);
    CHECK(sum.load() == n * (n + 1) / 2);
    CHECK(q.approx_size() == 0u);
}

TEST_CASE("has_room_for(n) says whether the next n pushes find free slots, lap after lap",
          "[bounded_queue][unit]") {
    const std::size_t capacity = GENERATE(std::size_t{1}, std::size_t{3}, std::size_t{8});
    bounded_queue<int> q{capacity};
    int v = 0;
    // Three laps: each time the ring fills and drains, the answer must follow the occupancy.
    for (int lap = 0; lap < 3; ++lap) {
        for (std::size_t used = 0; used <= capacity; ++used) {
            for (std::size_t n = 1; n <= capacity; ++n) {
                INFO("lap " << lap << ", " << used << " queued, n " << n);
                CHECK(q.has_room_for(n) == (used + n <= capacity));
            }
            if (used < capacity) {
                REQUIRE(q.try_push(int{v++}) == submit_status::accepted);
            }
        }
        // Full; free one slot at a time from the front.
        for (std::size_t freed = 1; freed <= capacity; ++freed) {
            int out = -1;
            REQUIRE(q.try_pop(out));
            for (std::size_t n = 1; n <= capacity; ++n) {
                INFO("lap " << lap << ", " << freed << " freed, n " << n);
                CHECK(q.has_room_for(n) == (n <= freed));
            }
        }
    }
}
