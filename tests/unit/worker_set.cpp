// detail::worker_set's seats: whatever starts, retires and exits happen, the live workers hold
// seats 0, 1, ..., live - 1, one each — what lets the worker loop give every ring a worker of its
// own (worker ids only grow, so `id % rings` does not). Real threads, each waiting for its stop.

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/worker_set.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

namespace {

struct no_payload {};
using set_type = workerpool::detail::worker_set<no_payload>;
using slot = set_type::slot;

// Flags that make a worker exit without being retired (as shutdown's drain does), by id.
using exit_flags = std::array<std::atomic<bool>, 256>;

// Each worker sleeps until it is told to stop (retired), or its exit flag or `exit_all` says so,
// then exits.
struct body {
    set_type* set;
    const std::atomic<bool>* exit_all;
    const exit_flags* exit_one;
    void operator()(const std::stop_token& st, slot& w) const {
        while (!st.stop_requested() && !exit_all->load() && !(*exit_one)[w.id].load()) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        set->note_exit(w);
    }
};

// The seats of the live workers (not retiring; exited ones count until reaped), sorted.
std::vector<std::size_t> live_seats(set_type& set) {
    std::vector<std::size_t> seats;
    set.for_each_locked([&seats](const slot& w) {
        if (!w.retiring) {
            seats.push_back(set_type::seat(w));
        }
    });
    std::sort(seats.begin(), seats.end());
    return seats;
}

std::vector<std::size_t> first_n(std::size_t n) {
    std::vector<std::size_t> v(n);
    for (std::size_t i = 0; i < n; ++i) {
        v[i] = i;
    }
    return v;
}

// Lets the workers in `leaving` exit without being retired, waits for them, and reaps them.
void exit_and_reap(set_type& set, exit_flags& exit_one, const std::vector<slot*>& leaving) {
    for (slot* w : leaving) {
        exit_one[w->id].store(true);
    }
    REQUIRE(workerpool::test::eventually([&] {
        return std::all_of(leaving.begin(), leaving.end(),
                           [](const slot* w) { return w->exited.load(); });
    }));
    std::lock_guard lock(set.mutex());
    set.reap_exited_locked();
}

}  // namespace

TEST_CASE("worker_set: the live workers hold seats 0 to live - 1 after any mix of starts, "
          "retirements and exits",
          "[worker_set][unit]") {
    std::atomic<bool> exit_all{false};
    exit_flags exit_one{};
    workerpool::detail::idle_stack<slot> idle;
    set_type set(0, 8, 0);
    const body b{&set, &exit_all, &exit_one};
    std::mt19937 rng(12345);
    for (int step = 0; step < 60; ++step) {
        std::lock_guard lock(set.mutex());
        set.reap_exited_locked();
        const std::size_t live = set.live();
        if (live < 8 && (live == 0 || rng() % 2 == 0)) {
            REQUIRE(set.spawn_locked(idle, b, false));
        } else {  // any live one, so that seats other than the last come free
            std::vector<slot*> candidates;
            set.for_each_locked([&candidates](slot& w) {
                if (!w.retiring) {
                    candidates.push_back(&w);
                }
            });
            REQUIRE(!candidates.empty());
            set.retire_locked(*candidates[rng() % candidates.size()], idle);
        }
        CAPTURE(step);
        CHECK(live_seats(set) == first_n(set.live()));
    }
    // Exits without retirement (as shutdown's drain makes them): the reaper frees their seats.
    std::vector<slot*> leaving;
    {
        std::lock_guard lock(set.mutex());
        while (set.live() < 6) {
            REQUIRE(set.spawn_locked(idle, b, false));
        }
        set.for_each_locked([&leaving](slot& w) {
            const std::size_t s = set_type::seat(w);
            if (!w.retiring && (s == 0 || s == 2)) {
                leaving.push_back(&w);
            }
        });
    }
    REQUIRE(leaving.size() == 2u);
    exit_and_reap(set, exit_one, leaving);
    {
        std::lock_guard lock(set.mutex());
        CHECK(set.live() == 4u);
        CHECK(live_seats(set) == first_n(4));
    }
    exit_all.store(true);
    REQUIRE(set.wait_exited_until(workerpool::detail::now_ns() + 30'000'000'000));
    {
        std::lock_guard lock(set.mutex());
        set.reap_exited_locked();
        CHECK(set.live() == 0u);
        CHECK(live_seats(set).empty());
    }
    set.join_all(idle);
}

TEST_CASE("worker_set: two workers that exit without retiring in one reaper pass leave the seats "
          "0 to live - 1",
          "[worker_set][unit]") {
    // The reaper hands each leaver's seat to the holder of the last one; a leaver handled earlier
    // in the same pass, still in the set until the pass ends, must not be taken for that holder.
    // Slots in order a0, a2, a3, a4 with seats 0, 2, 1, 3; a2 and a3 leave together.
    std::atomic<bool> exit_all{false};
    exit_flags exit_one{};
    workerpool::detail::idle_stack<slot> idle;
    set_type set(0, 8, 0);
    const body b{&set, &exit_all, &exit_one};
    const auto slot_at = [&set](std::size_t i) -> slot& { return set.at_locked(i); };
    {
        std::lock_guard lock(set.mutex());
        for (int i = 0; i < 4; ++i) {
            REQUIRE(set.spawn_locked(idle, b, false));
        }
        set.retire_locked(slot_at(1), idle);  // a3 takes seat 1
    }
    REQUIRE(workerpool::test::eventually([&] {
        std::lock_guard lock(set.mutex());
        set.reap_exited_locked();
        return set.slots_locked() == 3;
    }));
    std::vector<slot*> leaving;
    {
        std::lock_guard lock(set.mutex());
        REQUIRE(set.spawn_locked(idle, b, false));  // a4: seat 3
        CHECK(set_type::seat(slot_at(1)) == 2u);    // a2
        CHECK(set_type::seat(slot_at(2)) == 1u);    // a3
        leaving = {&slot_at(1), &slot_at(2)};
    }
    exit_and_reap(set, exit_one, leaving);
    {
        std::lock_guard lock(set.mutex());
        CHECK(set.live() == 2u);
        CHECK(live_seats(set) == first_n(2));
    }
    exit_all.store(true);
    set.join_all(idle);
}

TEST_CASE("worker_set: a stuck worker's replacement takes its seat", "[worker_set][unit]") {
    // So that the stuck worker's ring keeps a worker that serves it; the stuck one takes the last
    // seat (its ring shared, or none of its own, until it returns).
    std::atomic<bool> exit_all{false};
    exit_flags exit_one{};
    workerpool::detail::idle_stack<slot> idle;
    set_type set(0, 2, 1);
    const body b{&set, &exit_all, &exit_one};
    {
        std::lock_guard lock(set.mutex());
        REQUIRE(set.spawn_locked(idle, b, false));
        REQUIRE(set.spawn_locked(idle, b, false));
        slot& stuck = set.at_locked(0);
        REQUIRE(set.declare_stuck_locked(stuck, idle, b, true));
        REQUIRE(set.slots_locked() == 3);
        CHECK(set_type::seat(set.at_locked(2)) == 0u);  // the replacement
        CHECK(set_type::seat(stuck) == 2u);
        CHECK(live_seats(set) == first_n(3));
    }
    exit_all.store(true);
    set.join_all(idle);
}
