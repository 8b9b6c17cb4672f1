// detail::key_queues and detail::held_count, without threads or a scheduler around them: a key is
// held by one request at a time and the others wait behind it in arrival order; a key that
// drains is forgotten, and with a key rate its spent bucket is kept until full; a hand-back gives
// every waiting request back in order and counts it out. The clock is passed in: every time here
// is made up.

#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/held_count.hpp>
#include <workerpool/detail/key_queues.hpp>
#include <workerpool/detail/token_bucket.hpp>
#include <workerpool/options.hpp>

#include "support/catch.hpp"

#include <cstdint>
#include <vector>

namespace {

using envelope = workerpool::detail::envelope<int>;
using keys = workerpool::detail::key_queues<envelope>;
using workerpool::detail::held_count;
using workerpool::detail::never;
using workerpool::detail::request_settings;
using workerpool::detail::token_rate;

constexpr std::int64_t ms = 1'000'000;

// Request `id` of key `key` arrives in lane `lane`; returns whether it found the key free (then
// it holds the key, as the scheduler would place it). Counted in `held` either way.
bool arrive(keys& k, held_count& held, std::uint64_t key, int id, unsigned lane = 0) {
    const auto [pos, was_free] = k.arrive(key);
    if (!was_free) {
        k.wait_behind(pos, lane, 0, nullptr, int{id}, request_settings{}, std::int64_t{0}, nullptr);
    }
    held.in(lane);
    return was_free;
}

// The ids that move up, one by one, as key `key`'s holders end at `now`, until it drains.
std::vector<int> drain_key(keys& k, held_count& held, std::uint64_t key, std::int64_t now = 0) {
    std::vector<int> out;
    for (auto pos = k.find(key); pos != k.end();) {
        keys::item* next = k.next(pos, now);
        if (next == nullptr) {
            break;  // forgotten
        }
        out.push_back(next->e.request);
        held.out(next->lane);
        k.pop_next(pos);
    }
    return out;
}

std::vector<int> ids(const std::vector<envelope>& es) {
    std::vector<int> out;
    for (const envelope& e : es) {
        out.push_back(e.request);
    }
    return out;
}

}  // namespace

TEST_CASE("key_queues: one holder per key, the rest wait in arrival order, a drained key is "
          "forgotten",
          "[unit][key_queues]") {
    keys k{token_rate{}};
    held_count held{1};
    CHECK(arrive(k, held, 7, 1));
    CHECK_FALSE(arrive(k, held, 7, 2));
    CHECK(arrive(k, held, 9, 10));  // another key is free
    CHECK_FALSE(arrive(k, held, 7, 3));
    CHECK_FALSE(arrive(k, held, 9, 11));
    CHECK(k.waiting_of(7) == 2);
    CHECK(k.waiting_of(9) == 1);
    CHECK(k.waiting_of(8) == 0);

    CHECK(drain_key(k, held, 7) == std::vector<int>{2, 3});
    CHECK(k.find(7) == k.end());
    CHECK(k.waiting_of(7) == 0);
    CHECK(arrive(k, held, 7, 4));  // free again
    CHECK(k.find(9) != k.end());   // untouched
}

TEST_CASE("key_queues: a free key whose request could not be placed is free again, and a stalled "
          "key keeps its waiting requests behind nobody",
          "[unit][key_queues]") {
    keys k{token_rate{}};
    held_count held{1};
    const auto [pos, was_free] = k.arrive(5);
    REQUIRE(was_free);
    k.unhold(pos);
    CHECK(k.find(5) == k.end());
    CHECK(k.arrive(5).second);  // free

    CHECK_FALSE(arrive(k, held, 5, 2));
    auto p = k.find(5);
    REQUIRE(k.next(p, 0) != nullptr);
    k.stall(p);                          // out of memory to place request 2: it stays first in line
    CHECK_FALSE(arrive(k, held, 5, 3));  // behind nobody, until a drain hands them back
    std::vector<envelope> out;
    out.reserve(2);
    k.hand_back(k.find(5), out, held);
    CHECK(ids(out) == std::vector<int>{2, 3});
    CHECK(k.find(5) == k.end());
}

TEST_CASE("key_queues: hand_back_all gives back each key's waiting requests in order and counts "
          "them out",
          "[unit][key_queues]") {
    keys k{token_rate{}};
    held_count held{2};
    for (int id = 0; id < 12; ++id) {
        arrive(k, held, static_cast<std::uint64_t>(id % 3) + 1, id, static_cast<unsigned>(id % 2));
    }
    CHECK(held.all() == 12);
    std::vector<envelope> out;
    out.reserve(12);
    k.hand_back_all(out, held);
    REQUIRE(out.size() == 9);  // the three holders are the scheduler's
    std::vector<int> last(4, -1);
    for (const envelope& e : out) {
        const auto key = static_cast<std::size_t>(e.request % 3) + 1;
        CHECK(e.request > last[key]);  // in order per key
        CHECK(e.request >= 3);         // no holder
        last[key] = e.request;
    }
    CHECK(held.all() == 3);
    CHECK(k.find(1) == k.end());
    CHECK(k.waiting_of(2) == 0);
    int waiting = 0;
    k.for_each_waiting([&waiting](keys::item&) { ++waiting; });
    CHECK(waiting == 0);
}

TEST_CASE("key_queues: a key that drains keeps its spent bucket until full, then it is dropped",
          "[unit][key_queues]") {
    // One token per 10 ms, a burst of 1.
    const token_rate rate = token_rate::of(workerpool::rate_limit_settings{100.0, 1});
    keys k{rate};
    held_count held{1};
    arrive(k, held, 7, 1);
    CHECK(k.take_token(7, 0));
    CHECK_FALSE(k.take_token(7, 5 * ms));  // spent
    CHECK(k.next_token(7) == 10 * ms);
    CHECK(drain_key(k, held, 7, 5 * ms).empty());  // it drains at 5 ms
    CHECK(k.find(7) == k.end());
    CHECK(k.next_wake() != never);  // the kept bucket must be pruned some time

    arrive(k, held, 7, 2);  // back at once: its bucket is still spent
    CHECK_FALSE(k.take_token(7, 6 * ms));
    CHECK(k.take_token(7, 10 * ms));
    CHECK(drain_key(k, held, 7, 10 * ms).empty());

    k.prune(1000 * ms);  // long after: the bucket is full again and dropped
    CHECK(k.next_wake() == never);
    arrive(k, held, 7, 3);
    CHECK(k.take_token(7, 1000 * ms));
}

TEST_CASE("key_queues: without a key rate a drained key leaves nothing behind",
          "[unit][key_queues]") {
    keys k{token_rate{}};
    held_count held{1};
    arrive(k, held, 7, 1);
    CHECK(k.take_token(7, 0));
    CHECK(k.take_token(7, 0));  // no limit
    CHECK(k.take_token(8, 0));  // an unknown key has a token
    CHECK(drain_key(k, held, 7, 0).empty());
    CHECK(k.next_wake() == never);
}

TEST_CASE("held_count: lanes count their own requests, retries count only in all",
          "[unit][key_queues]") {
    held_count held{3};
    CHECK(held.empty());
    held.in(0);
    held.in(2);
    held.in(2);
    held.retry_in();
    CHECK(held.in_lane(0) == 1);
    CHECK(held.in_lane(1) == 0);
    CHECK(held.in_lane(2) == 2);
    CHECK(held.all() == 4);
    CHECK(held.gauge() == 4);
    held.out(2);
    held.retry_out();
    CHECK(held.in_lane(2) == 1);
    CHECK(held.all() == 2);
    held.out(0);
    held.out(2);
    CHECK(held.empty());
}

TEST_CASE("key_queues: a stalled key waits for unstall, keeps its order, and is held again",
          "[unit][key_queues]") {
    // The scheduler stalls a key whose next request it had no memory to place; the supervisor
    // calls unstall until that works. Meanwhile nothing of the key moves, later arrivals queue
    // behind, and a stalled key whose line emptied is forgotten by unstall.
    keys k{token_rate{}};
    held_count held{1};
    CHECK(arrive(k, held, 7, 1));
    CHECK_FALSE(arrive(k, held, 7, 2));
    CHECK(arrive(k, held, 9, 10));
    held.out(0);  // 1 ends: 2 moves up, but placing it fails
    auto pos = k.find(7);
    REQUIRE(k.next(pos, 0) != nullptr);
    k.stall(pos);
    CHECK(k.stalled() == 1);
    CHECK_FALSE(arrive(k, held, 7, 3));  // behind 2, though nobody holds the key
    std::vector<int> placed;
    CHECK_FALSE(k.unstall([](keys::item&) { return false; }, 0));  // still no memory
    CHECK(k.stalled() == 1);
    CHECK(k.waiting_of(7) == 2);
    CHECK(k.unstall(
        [&](keys::item& first) {
            placed.push_back(first.e.request);
            return true;
        },
        0));
    CHECK(placed == std::vector<int>{2});
    CHECK(k.stalled() == 0);
    CHECK(k.waiting_of(7) == 1);
    CHECK_FALSE(arrive(k, held, 7, 4));  // held again: 4 waits too
    held.out(0);                         // 2 ends
    CHECK(drain_key(k, held, 7) == std::vector<int>{3, 4});

    // A stalled key whose line is gone (handed back or cancelled) is forgotten, not placed.
    pos = k.find(9);
    REQUIRE(pos != k.end());
    k.stall(pos);  // 9 has no waiting request: the line is empty
    CHECK(k.stalled() == 1);
    CHECK(k.unstall([](keys::item&) { return false; }, 0));
    CHECK(k.stalled() == 0);
    CHECK(k.find(9) == k.end());
}
