// Bulk submission through the scheduler (a key, a lane or a `not_before` in the call's
// job_options, or a pool with lanes): the same contract as the ring's bulk (a prefix taken, the
// rest untouched, one refusal counted, a closed pool takes nothing, a handler of the pool never
// waits for itself), in one pass of the scheduler's lock per chunk, and each request it made
// ready wakes a worker.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <stop_token>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::job_options;
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

std::vector<int> range(int first, int count) {
    std::vector<int> v;
    for (int i = first; i < first + count; ++i) {
        v.push_back(i);
    }
    return v;
}

}  // namespace

TEST_CASE("try_submit_bulk with a key takes the prefix its lane has room for, runs it in order, "
          "and leaves the rest untouched",
          "[dispatcher][bulk][scheduler][unit]") {
    gate hold;
    recorder seen;
    dispatcher<job> pool(held_handler(hold, seen), held_options(8, 2));
    finally release([&] { hold.open(); });
    std::vector<job> batch = jobs(0, 20);
    const std::size_t taken = pool.try_submit_bulk(std::span<job>(batch), job_options{.key = 7});
    // The lane holds 8, and the 20 go in in one pass of the scheduler's lock: no worker takes
    // one in between.
    CHECK(taken == 8u);
    CHECK(whole_from(batch, taken) == static_cast<int>(20 - taken));
    CHECK(pool.stats().rejected == 1u);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));  // one at a time: the key's
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(seen.ids() == range(0, static_cast<int>(taken)));
    CHECK(pool.stats().submitted == taken);
}

TEST_CASE("submit_bulk with a key waits for room until all are in, and they run in order",
          "[dispatcher][bulk][scheduler][unit]") {
    gate hold;
    recorder seen;
    dispatcher<job> pool(held_handler(hold, seen), held_options(4, 2));
    finally release([&] { hold.open(); });
    std::vector<job> batch = jobs(0, 40);
    std::atomic<std::size_t> taken{0};
    std::jthread producer(
        [&] { taken = pool.submit_bulk(std::span<job>(batch), job_options{.key = 3}); });
    // Runs before the producer is joined, even when a REQUIRE fails: the shutdown wakes it.
    finally unblock([&] {
        hold.open();
        (void)pool.shutdown(0s);
    });
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    hold.release(3);  // a few go through while the producer waits for room
    hold.open();
    producer.join();
    CHECK(taken.load() == 40u);
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(seen.ids() == range(0, 40));
    CHECK(pool.stats().rejected == 0u);
}

TEST_CASE("bulk submits through the scheduler into a closed pool take nothing and touch nothing",
          "[dispatcher][bulk][scheduler][shutdown][unit]") {
    auto o = held_options(8, 1);
    o.priority_lanes = 2;  // every request goes through the scheduler
    dispatcher<job> pool([](job&) {}, o);
    (void)pool.shutdown(1s);
    std::vector<job> batch = jobs(0, 5);
    CHECK(pool.try_submit_bulk(std::span<job>(batch), job_options{.priority = 1}) == 0u);
    CHECK(pool.submit_bulk(std::span<job>(batch)) == 0u);
    CHECK(pool.try_submit_bulk(std::span<job>(batch), job_options{.key = 2}) == 0u);
    CHECK(whole_from(batch, 0) == 5);
    CHECK(pool.stats().rejected == 0u);  // closed is not a refusal
}

TEST_CASE("submit_bulk with a key from one of the pool's own handlers does not wait for itself",
          "[dispatcher][bulk][scheduler][unit]") {
    std::atomic<std::size_t> taken{99};
    std::atomic<int> whole{0};
    std::atomic<dispatcher<job>*> self{nullptr};
    dispatcher<job> pool(
        [&](job& j) {
            if (j.id == 0) {
                std::vector<job> children = jobs(10, 5);
                // The lane holds 3 and nothing of key 5 starts while this handler runs.
                taken = self.load()->submit_bulk(std::span<job>(children), job_options{.key = 5});
                whole = whole_from(children, taken.load());
            }
        },
        held_options(3, 1));
    self = &pool;
    REQUIRE(pool.try_submit(job{0}, job_options{.key = 5}) == submit_status::accepted);
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(taken.load() == 3u);
    CHECK(whole.load() == 2);
    CHECK(pool.stats().completed == 4u);
    CHECK(pool.stats().rejected == 1u);
}

TEST_CASE("a bulk through the scheduler wakes a worker for each request it made ready",
          "[dispatcher][bulk][scheduler][unit]") {
    gate hold;
    recorder seen;
    auto o = held_options(64, 3);
    o.priority_lanes = 2;
    dispatcher<job> pool(held_handler(hold, seen), o);
    finally release([&] { hold.open(); });
    REQUIRE(eventually([&] { return pool.stats().idle == 3u; }));  // all asleep
    std::vector<job> batch = jobs(0, 3);
    REQUIRE(pool.try_submit_bulk(std::span<job>(batch), job_options{.priority = 1}) == 3u);
    // Each holds its worker at the gate: all three run only if all three were woken.
    CHECK(eventually([&] { return hold.waiting() == 3; }));
    hold.open();
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(seen.size() == 3u);
}

TEST_CASE("a bulk with a not_before starts none of its requests early",
          "[dispatcher][bulk][scheduler][unit]") {
    std::vector<std::chrono::steady_clock::time_point> starts;
    std::mutex m;
    dispatcher<job> pool(
        [&](job&) {
            std::lock_guard lock(m);
            starts.push_back(std::chrono::steady_clock::now());
        },
        held_options(16, 2));
    const auto at = std::chrono::steady_clock::now() + 100ms;
    std::vector<job> batch = jobs(0, 10);
    REQUIRE(pool.submit_bulk(std::span<job>(batch), job_options{.not_before = at}) == 10u);
    const auto held = pool.stats().scheduled;
    if (std::chrono::steady_clock::now() < at) {  // a stalled test thread may see them run
        CHECK(held == 10u);
    }
    REQUIRE(pool.wait_idle_for(30s));
    std::lock_guard lock(m);
    REQUIRE(starts.size() == 10u);
    for (const auto& t : starts) {
        CHECK(t >= at);
    }
}

TEST_CASE("a bulk whose not_before comes before the supervisor's planned wake-up wakes it",
          "[dispatcher][bulk][scheduler][unit]") {
    std::atomic<int> ran{0};
    auto o = held_options(16, 1);
    o.scale_interval = std::chrono::milliseconds(60'000);  // no tick to come to the rescue
    // A policy of its own: the supervisor never rests (a resting one is kicked by any submit),
    // so only the bulk's time can bring its planned wake-up forward.
    o.policy = [](const workerpool::scale_metrics& m) { return m.workers; };
    dispatcher<job> pool([&](job&) { ran.fetch_add(1); }, o);
    // The supervisor plans to wake in a minute, for this one and for its tick.
    REQUIRE(pool.try_submit(job{0}, job_options{.not_before = std::chrono::steady_clock::now() +
                                                              60s}) == submit_status::accepted);
    // Until it sleeps: its wake-up count stands still for 300 ms (anything that woke it after
    // the bulk would find the bulk's time by itself).
    std::uint64_t seen = pool.stats().supervisor_wakeups;
    auto since = std::chrono::steady_clock::now();
    REQUIRE(eventually(
        [&] {
            const std::uint64_t now_seen = pool.stats().supervisor_wakeups;
            if (now_seen != seen) {
                seen = now_seen;
                since = std::chrono::steady_clock::now();
            }
            return std::chrono::steady_clock::now() - since >= 300ms;
        },
        10s));
    std::vector<job> batch = jobs(1, 4);
    REQUIRE(pool.try_submit_bulk(
                std::span<job>(batch),
                job_options{.not_before = std::chrono::steady_clock::now() + 50ms}) == 4u);
    // Generous: they are due in 50 ms; without the wake-up they would wait the minute.
    CHECK(eventually([&] { return ran.load() == 4; }, 10s));
    CHECK(ran.load() == 4);
}
