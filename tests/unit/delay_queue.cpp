// detail::delay_queue, without threads (issue 15, item 5): due order, the wait for room in a full
// queue and who ends it, hand-back after shutdown began, and the submitted count.

#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/delay_queue.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/detail/sharded_queue.hpp>

#include "support/catch.hpp"

#include <cstdint>
#include <limits>
#include <vector>

namespace {

using envelope = workerpool::detail::envelope<int>;
using delay_queue = workerpool::detail::delay_queue<envelope>;
using scheduled = delay_queue::scheduled;
using workerpool::detail::back_pressure;
using workerpool::detail::lifecycle;
using workerpool::detail::phase;
using workerpool::detail::request_settings;
using ring = workerpool::detail::sharded_queue<envelope>;

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

envelope make(int id) {
    return envelope(int{id}, request_settings{}, 0);
}

// A delay queue in front of a queue of `capacity` slots, with what it talks to.
struct bench {
    explicit bench(std::size_t capacity, std::size_t rings = 1) : q(capacity, rings) {}
    ring q;
    back_pressure bp;
    lifecycle life;
    delay_queue d;
    // Fills the one-slot queue with request 100, then schedules 1 and 2 at 10 and `second_due`.
    void full_with_two(std::int64_t second_due) {
        REQUIRE(q.try_emplace(int{100}, request_settings{}, 0) ==
                workerpool::submit_status::accepted);
        CHECK(d.schedule(10, make(1), life) == scheduled::queued);
        CHECK(d.schedule(second_due, make(2), life) == scheduled::queued);
    }
};

// Pops everything from `q`, returning the ids in pop order.
std::vector<int> pop_all(ring& q) {
    std::vector<int> ids;
    while (q.consume(0, [&ids](envelope&& e) noexcept { ids.push_back(e.request); })) {
    }
    return ids;
}

}  // namespace

TEST_CASE("delay_queue releases what is due, earliest first, and says when the next is due",
          "[delay_queue][unit]") {
    ring q(8, 1);
    back_pressure bp;
    lifecycle life;
    delay_queue d;
    CHECK(d.schedule(30, make(3), life) == scheduled::queued);
    CHECK(d.schedule(10, make(1), life) == scheduled::queued);
    CHECK(d.schedule(20, make(2), life) == scheduled::queued);
    CHECK(d.pending() == 3u);
    CHECK(d.next_wake(false) == 10);

    auto r = d.release_due(5, q, bp);  // nothing due yet
    CHECK(r.pushed == 0u);
    CHECK(r.next_due == 10);

    r = d.release_due(25, q, bp);
    CHECK(r.pushed == 2u);
    CHECK(r.next_due == 30);
    CHECK(pop_all(q) == std::vector<int>{1, 2});
    CHECK(d.pending() == 1u);

    r = d.release_due(30, q, bp);  // due exactly now
    CHECK(r.pushed == 1u);
    CHECK(r.next_due == never);
    CHECK(d.next_wake(false) == never);  // nothing left: no reason to wake
    CHECK(pop_all(q) == std::vector<int>{3});
    // Three pushes, all of them retries: no request was submitted.
    CHECK(d.submitted(q) == 0u);
}

TEST_CASE("delay_queue: due requests meeting a full queue wait for room, and the next pop ends it",
          "[delay_queue][backpressure][unit]") {
    bench b(1);
    b.full_with_two(50);
    auto& [q, bp, life, d] = b;

    auto r = d.release_due(20, q, bp);
    CHECK(r.pushed == 0u);
    CHECK(r.next_due == never);  // the supervisor does not poll a full queue
    CHECK(d.room_awaited());
    CHECK(bp.waiting());  // counted as a waiter, so the next pop looks
    CHECK(d.next_wake(false) == never);
    // A retry scheduled now waits behind the room: the pops release it too.
    CHECK(d.schedule(30, make(3), life) == scheduled::queued_behind_room);
    // Nothing to do for a pass that finds no wait (another released them): std::nullopt.
    CHECK(pop_all(q) == std::vector<int>{100});
    const auto released = d.release_into_room(40, q, bp);
    REQUIRE(released.has_value());
    CHECK(released->pushed == 1u);  // request 1; request 3 is due too but the ring holds one
    CHECK(d.room_awaited());        // 3 still waits
    CHECK(pop_all(q) == std::vector<int>{1});
    const auto second = d.release_into_room(40, q, bp);
    REQUIRE(second.has_value());
    CHECK(second->pushed == 1u);
    CHECK(second->next_due == 50);  // nothing due waits: the supervisor plans for request 2
    CHECK_FALSE(d.room_awaited());
    CHECK_FALSE(bp.waiting());
    CHECK_FALSE(d.release_into_room(60, q, bp).has_value());
    CHECK(d.next_wake(false) == 50);
    CHECK(pop_all(q) == std::vector<int>{3});
}

TEST_CASE("delay_queue: once shutdown drains, retries are handed back, and close takes the rest",
          "[delay_queue][shutdown][unit]") {
    bench b(1);
    b.full_with_two(20);
    auto& [q, bp, life, d] = b;
    (void)d.release_due(15, q, bp);  // 1 waits for room
    REQUIRE(bp.waiting());

    life.advance(phase::draining);
    std::vector<envelope> left;
    d.close_into(left, bp);
    CHECK(left.size() == 2u);
    CHECK(d.pending() == 0u);
    CHECK_FALSE(d.room_awaited());
    CHECK_FALSE(bp.waiting());  // the wait for room ended with the close
    CHECK(d.next_wake(false) == never);

    CHECK(d.schedule(5, make(3), life) == scheduled::handed_back);
    std::vector<envelope> late;
    d.take_handed_back(late);
    REQUIRE(late.size() == 1u);
    CHECK(late[0].request == 3);
}

TEST_CASE("delay_queue: a closed queue takes no retry and is no reason to wake",
          "[delay_queue][unit]") {
    ring q(4, 2);
    back_pressure bp;
    lifecycle life;
    delay_queue d;
    CHECK(d.schedule(10, make(1), life) == scheduled::queued);
    (void)q.close();
    const auto r = d.release_due(20, q, bp);
    CHECK(r.pushed == 0u);
    CHECK(r.next_due == never);
    CHECK(d.pending() == 1u);  // shutdown collects it
    CHECK(d.next_wake(true) == never);
    CHECK_FALSE(bp.waiting());
}
