// bounded_queue on its own: exact capacity (also for capacities that are not powers of two,
// across many wrap-arounds), FIFO order, full and closed refusals that leave the value untouched,
// draining after close and its accounting, try_emplace and consume, element lifetimes through
// every path and the destruction of what is still queued, the room hint (has_room_for), FIFO
// between two threads, and a 4-producer/4-consumer run in which every element arrives exactly
// once and each producer's elements stay in order. Threads only record; assertions run after
// they are joined.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/status.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using workerpool::bounded_queue;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::tracked;
using workerpool::test::under_tsan;

}  // namespace

TEST_CASE("bounded_queue reports its exact capacity", "[bounded_queue][unit]") {
    const bounded_queue<int> q{3};
    CHECK(q.capacity() == 3u);
    CHECK(q.approx_size() == 0u);
    CHECK(q.free_slots() == 3u);
    CHECK_FALSE(q.is_closed());
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

TEST_CASE("bounded_queue holds exactly capacity elements, lap after lap", "[bounded_queue][unit]") {
    for (const std::size_t capacity : {2u, 3u, 5u, 7u, 64u}) {
        INFO("capacity = " << capacity);
        bounded_queue<std::uint64_t> q{capacity};
        std::uint64_t next_in = 0;
        std::uint64_t next_out = 0;
        std::size_t wrong_order = 0;
        for (int lap = 0; lap < 10; ++lap) {
            // Bounded, so that a queue that never says full fails instead of hanging.
            for (std::size_t k = 0;
                 k <= capacity && q.try_push(std::uint64_t{next_in}) == submit_status::accepted;
                 ++k) {
                ++next_in;
            }
            // Exactly full: as many elements in as out, plus the capacity.
            REQUIRE(next_in - next_out == capacity);
            CHECK(q.approx_size() == capacity);
            CHECK(q.free_slots() == 0u);
            CHECK(q.try_push(std::uint64_t{999}) == submit_status::full);
            // Take out a part that changes with the lap, so that head and tail meet every slot.
            const std::size_t take = 1 + static_cast<std::size_t>(lap) % capacity;
            for (std::size_t i = 0; i < take; ++i) {
                std::uint64_t out = 0;
                REQUIRE(q.try_pop(out));
                wrong_order += out == next_out ? 0 : 1;
                ++next_out;
            }
            CHECK(q.free_slots() == take);
        }
        std::uint64_t out = 0;
        while (q.try_pop(out)) {
            wrong_order += out == next_out ? 0 : 1;
            ++next_out;
        }
        CHECK(wrong_order == 0u);
        CHECK(next_out == next_in);
        CHECK(q.pushed_count() == next_in);
        CHECK(q.approx_size() == 0u);
    }
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

TEST_CASE("one producer and one consumer on two threads see strict FIFO order",
          "[bounded_queue][unit]") {
    const std::uint64_t n = 30'000;
    bounded_queue<std::uint64_t> q{61};  // not a power of two; some 500 laps
    std::uint64_t received = 0;
    std::uint64_t out_of_order = 0;
    {
        std::jthread consumer([&] {
            std::uint64_t expected = 0;
            while (expected < n) {
                std::uint64_t v = 0;
                if (q.try_pop(v)) {
                    out_of_order += v == expected ? 0 : 1;
                    ++expected;
                } else {
                    std::this_thread::yield();
                }
            }
            received = expected;
        });
        for (std::uint64_t i = 0; i < n;) {
            if (q.try_push(std::uint64_t{i}) == submit_status::accepted) {
                ++i;
            } else {
                std::this_thread::yield();
            }
        }
    }  // joins the consumer
    CHECK(received == n);
    CHECK(out_of_order == 0u);
}

TEST_CASE("try_emplace builds in place and answers full and closed like try_push",
          "[bounded_queue][unit]") {
    bounded_queue<std::pair<int, std::unique_ptr<int>>> q{2};
    CHECK(q.try_emplace(1, std::make_unique<int>(10)) == submit_status::accepted);
    CHECK(q.try_emplace(2, nullptr) == submit_status::accepted);
    auto keep = std::make_unique<int>(30);
    CHECK(q.try_emplace(3, std::move(keep)) == submit_status::full);
    CHECK(keep != nullptr);  // NOLINT(bugprone-use-after-move): refused, so untouched
    std::pair<int, std::unique_ptr<int>> out;
    REQUIRE(q.try_pop(out));
    CHECK(out.first == 1);
    REQUIRE(out.second != nullptr);
    CHECK(*out.second == 10);
    CHECK(q.close() == 2u);
    CHECK(q.try_emplace(4, std::move(keep)) == submit_status::closed);
    CHECK(keep != nullptr);  // NOLINT(bugprone-use-after-move)
    REQUIRE(q.try_pop(out));
    CHECK(out.first == 2);
    CHECK_FALSE(q.try_pop(out));
}

TEST_CASE("consume hands over the oldest element as an rvalue and destroys the slot's copy",
          "[bounded_queue][unit]") {
    tracked::reset();
    {
        bounded_queue<tracked> q{3};
        REQUIRE(q.try_push(tracked{1}) == submit_status::accepted);
        REQUIRE(q.try_push(tracked{2}) == submit_status::accepted);
        CHECK(tracked::live == 2);
        std::vector<int> got;
        long live_inside = -1;
        CHECK(q.consume([&](tracked&& t) noexcept {
            tracked mine(std::move(t));
            got.push_back(mine.id);
            live_inside = tracked::live.load();  // the slot's element and `mine`, plus one queued
        }));
        CHECK(live_inside == 3);
        CHECK(tracked::live == 1);  // the slot's element was destroyed after the callback
        CHECK(q.consume([&](tracked&& t) noexcept { got.push_back(t.id); }));
        CHECK_FALSE(q.consume([&](tracked&&) noexcept { got.push_back(-1); }));
        CHECK(got == std::vector<int>{1, 2});
    }
    CHECK(tracked::live == 0);
    CHECK(tracked::misuse == 0);
}

TEST_CASE("close reports every accepted push, and pushes after it are refused untouched",
          "[bounded_queue][unit]") {
    bounded_queue<std::unique_ptr<int>> q{4};
    for (int i = 0; i < 3; ++i) {
        REQUIRE(q.try_push(std::make_unique<int>(i)) == submit_status::accepted);
    }
    std::unique_ptr<int> out;
    REQUIRE(q.try_pop(out));  // popped elements still count as pushed
    CHECK(q.close() == 3u);
    CHECK(q.is_closed());
    auto late = std::make_unique<int>(7);
    CHECK(q.try_push(std::move(late)) == submit_status::closed);
    REQUIRE(late != nullptr);  // NOLINT(bugprone-use-after-move): refused, so untouched
    CHECK(*late == 7);
    CHECK(q.pushed_count() == 3u);
    CHECK(q.free_slots() == 2u);  // closing frees nothing and takes nothing
    REQUIRE(q.try_pop(out));
    CHECK(*out == 1);
    REQUIRE(q.try_pop(out));
    CHECK(*out == 2);
    CHECK_FALSE(q.try_pop(out));
    CHECK(q.close() == 3u);
}

TEST_CASE("every element is destroyed exactly once through push, pop, refusal and destruction",
          "[bounded_queue][lifetime][unit]") {
    tracked::reset();
    {
        bounded_queue<tracked> q{3};
        tracked out;
        for (int round = 0; round < 20; ++round) {  // laps around three slots, two at a time
            REQUIRE(q.try_push(tracked{round}) == submit_status::accepted);
            REQUIRE(q.try_push(tracked{-round}) == submit_status::accepted);
            REQUIRE(q.try_pop(out));
            REQUIRE(q.try_pop(out));
        }
        for (int i = 0; i < 3; ++i) {  // head is at slot 40 % 3 == 1
            REQUIRE(q.try_push(tracked{i}) == submit_status::accepted);
        }
        // The queue is full now; the elements straddle the end of the slot array.
        CHECK(q.approx_size() == 3u);
        tracked refused{100};
        CHECK(q.try_push(std::move(refused)) == submit_status::full);
        CHECK_FALSE(refused.moved_from);  // NOLINT(bugprone-use-after-move)
        q.close();
        CHECK(q.try_push(std::move(refused)) == submit_status::closed);
        CHECK_FALSE(refused.moved_from);  // NOLINT(bugprone-use-after-move)
        CHECK(tracked::live == 3 + 2);    // queued + `out` + `refused`
    }
    CHECK(tracked::live == 0);
    CHECK(tracked::misuse == 0);
}

TEST_CASE("bounded_queue refuses a zero capacity and one it cannot honour",
          "[bounded_queue][unit]") {
    CHECK_THROWS_AS(bounded_queue<int>{0}, std::invalid_argument);
    CHECK_THROWS_AS(bounded_queue<int>{std::size_t{1} << 62}, std::invalid_argument);
    CHECK_THROWS_AS(bounded_queue<int>{static_cast<std::size_t>(-1)}, std::invalid_argument);
}

TEST_CASE("four producers and four consumers deliver every element exactly once and in each "
          "producer's order",
          "[bounded_queue][mpmc][unit]") {
    constexpr int producers = 4;
    constexpr int consumers = 4;
    const int per_producer = under_tsan ? 10'000 : 50'000;  // 200k elements in all without TSan
    const int total = producers * per_producer;
    tracked::reset();
    // Per consumer: how often it saw each id, and how many times a producer's sequence went back.
    std::vector<std::vector<std::uint8_t>> seen(
        consumers, std::vector<std::uint8_t>(static_cast<std::size_t>(total)));
    std::vector<int> reordered(consumers, 0);
    std::atomic<int> popped{0};
    std::atomic<int> producers_done{0};
    {
        bounded_queue<tracked> q{64};
        gate start;
        finally open_on_exit([&] { start.open(); });
        std::vector<std::jthread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                start.wait();
                for (int i = 0; i < per_producer;) {
                    // Ids of a producer grow with i, so order within one producer is checkable.
                    if (q.try_emplace(p * per_producer + i) == submit_status::accepted) {
                        ++i;
                    } else {
                        std::this_thread::yield();
                    }
                }
                producers_done.fetch_add(1);
            });
        }
        for (int c = 0; c < consumers; ++c) {
            threads.emplace_back([&, c] {
                start.wait();
                std::vector<int> last(producers, -1);
                auto& mine = seen[static_cast<std::size_t>(c)];
                tracked t;
                int idle_polls = 0;  // once the producers are done: bounds the wait if one is lost
                while (popped.load(std::memory_order_relaxed) < total) {
                    if (!q.try_pop(t)) {
                        if (producers_done.load() == producers && ++idle_polls > 100'000) {
                            break;
                        }
                        std::this_thread::yield();
                        continue;
                    }
                    idle_polls = 0;
                    popped.fetch_add(1, std::memory_order_relaxed);
                    if (t.id < 0 || t.id >= total) {
                        reordered[static_cast<std::size_t>(c)] += 1'000'000;  // garbage
                        continue;
                    }
                    ++mine[static_cast<std::size_t>(t.id)];
                    const auto p = static_cast<std::size_t>(t.id / per_producer);
                    if (t.id <= last[p]) {
                        ++reordered[static_cast<std::size_t>(c)];
                    }
                    last[p] = t.id;
                }
            });
        }
        REQUIRE(eventually([&] { return start.waiting() == std::size_t{producers + consumers}; }));
        start.open();
        for (auto& t : threads) {
            t.join();
        }
        CHECK(q.approx_size() == 0u);
        CHECK(q.pushed_count() == static_cast<std::uint64_t>(total));
    }
    const auto [missing, duplicated] = workerpool::test::tally_ids(seen, total);
    CHECK(popped.load() == total);
    CHECK(missing == 0);
    CHECK(duplicated == 0);
    CHECK(reordered == std::vector<int>(consumers, 0));
    CHECK(tracked::live == 0);
    CHECK(tracked::misuse == 0);
}
