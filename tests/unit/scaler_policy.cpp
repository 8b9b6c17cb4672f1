// The built-in scaling policies as pure functions: every test feeds a hand-made sequence of
// `scale_metrics` with an injected clock (`now`) and checks the wanted worker count. No threads.

#include <workerpool/scaler.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>

namespace {

using namespace std::chrono_literals;
using workerpool::depth_policy;
using workerpool::scale_metrics;
using workerpool::wait_time_policy;

using time_point = std::chrono::steady_clock::time_point;

// An arbitrary fixed origin for the injected clock.
const time_point t0 = time_point{} + std::chrono::hours(1);

scale_metrics metrics(time_point now, std::size_t depth, std::size_t workers, std::size_t idle,
                      std::size_t min_workers = 1, std::size_t max_workers = 8) {
    scale_metrics m;
    m.now = now;
    m.queue_depth = depth;
    m.workers = workers;
    m.idle_workers = idle;
    m.busy_workers = workers - idle;
    m.min_workers = min_workers;
    m.max_workers = max_workers;
    return m;
}

scale_metrics wait_metrics(time_point now, std::chrono::nanoseconds wait, std::size_t workers,
                           std::size_t idle, std::size_t min_workers = 1,
                           std::size_t max_workers = 16) {
    scale_metrics m = metrics(now, wait > 0ns ? 1 : 0, workers, idle, min_workers, max_workers);
    m.queue_wait = wait;
    return m;
}

depth_policy make_depth(std::size_t mark = 16, double ratio = 0.75,
                        std::chrono::nanoseconds cooldown = 100ms) {
    return depth_policy({mark, ratio, cooldown});
}

}  // namespace

// ------------------------------------------------------------------------------- depth_policy

TEST_CASE("depth_policy grows only when the depth is strictly above the mark",
          "[scaling][policy][unit]") {
    auto p = make_depth(16);
    CHECK(p(metrics(t0, 16, 2, 0)) == 2u);
    CHECK(p(metrics(t0 + 1ms, 17, 2, 0)) == 3u);
}

TEST_CASE("depth_policy adds one worker per scale_up_depth queued requests in one tick",
          "[scaling][policy][unit]") {
    auto p = make_depth(16);
    // 10x the mark: ten more workers at once, not one per tick.
    CHECK(p(metrics(t0, 160, 2, 0, 1, 64)) == 12u);
    // 31 queued is one mark's worth (31 / 16 == 1): one more.
    CHECK(p(metrics(t0 + 1ms, 31, 2, 0, 1, 64)) == 3u);
}

TEST_CASE("depth_policy never asks for more than max_workers", "[scaling][policy][unit]") {
    auto p = make_depth(16);
    CHECK(p(metrics(t0, 10'000, 2, 0, 1, 4)) == 4u);
    CHECK(p(metrics(t0 + 1ms, 10'000, 4, 0, 1, 4)) == 4u);
    CHECK(p(metrics(t0 + 2ms, 10'000, 3, 0, 1, 4)) == 4u);
}

TEST_CASE("depth_policy shrinks only after the depth stayed low for a whole cool-down",
          "[scaling][policy][unit]") {
    auto p = make_depth(16, 0.75, 100ms);
    // Low mark is 12: depth 12 counts as low, 0 too.
    CHECK(p(metrics(t0, 12, 4, 2)) == 4u);
    CHECK(p(metrics(t0 + 50ms, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 100ms - 1ns, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 100ms, 0, 4, 4)) == 3u);
}

TEST_CASE("depth_policy sheds one worker per tick, down to min_workers and no further",
          "[scaling][policy][unit]") {
    auto p = make_depth(16, 0.75, 100ms);
    std::size_t workers = 6;
    CHECK(p(metrics(t0, 0, workers, workers, 2)) == workers);
    for (int tick = 1; tick <= 10; ++tick) {
        const std::size_t want = p(metrics(t0 + 100ms + tick * 1ms, 0, workers, workers, 2));
        CAPTURE(tick, workers, want);
        if (workers > 2) {
            REQUIRE(want == workers - 1);
        } else {
            REQUIRE(want == 2u);
        }
        workers = want;
    }
    CHECK(workers == 2u);
}

TEST_CASE("depth_policy never sheds a worker when none is idle", "[scaling][policy][unit]") {
    auto p = make_depth(16, 0.75, 10ms);
    CHECK(p(metrics(t0, 0, 4, 0)) == 4u);
    CHECK(p(metrics(t0 + 1s, 0, 4, 0)) == 4u);
    CHECK(p(metrics(t0 + 2s, 0, 4, 1)) == 3u);
}

TEST_CASE("depth_policy waits a cool-down after a growth before it sheds",
          "[scaling][policy][unit]") {
    auto p = make_depth(16, 0.75, 100ms);
    CHECK(p(metrics(t0, 40, 2, 0)) == 4u);  // growth at t0
    // Low from t0 + 1ms. The quiet period ends at t0 + 101ms; the growth cool-down at t0 + 100ms.
    CHECK(p(metrics(t0 + 1ms, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 100ms, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 101ms - 1ns, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 101ms, 0, 4, 4)) == 3u);
}

TEST_CASE("depth_policy restarts the quiet period when the depth rises between the marks",
          "[scaling][policy][unit]") {
    auto p = make_depth(16, 0.75, 100ms);
    CHECK(p(metrics(t0, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 60ms, 14, 4, 0)) == 4u);  // between 12 and 16: resets the quiet clock
    CHECK(p(metrics(t0 + 61ms, 0, 4, 4)) == 4u);
    CHECK(p(metrics(t0 + 150ms, 0, 4, 4)) == 4u);  // 100ms after t0, but only 89ms quiet
    CHECK(p(metrics(t0 + 161ms, 0, 4, 4)) == 3u);
}

TEST_CASE("depth_policy does not flap under a steady load between the marks",
          "[scaling][policy][unit]") {
    auto p = make_depth(16, 0.5, 20ms);  // marks: up above 16, down at or below 8
    std::mt19937 rng(12345);
    std::uniform_int_distribution<std::size_t> depth(9, 16);
    std::size_t changes = 0;
    std::size_t workers = 5;
    for (int tick = 0; tick < 10'000; ++tick) {
        const std::size_t d = depth(rng);
        const std::size_t want = p(metrics(t0 + tick * 10ms, d, workers, tick % 3 == 0 ? 1 : 0));
        if (want != workers) {
            ++changes;
        }
        workers = want;
    }
    CHECK(changes == 0u);
    CHECK(workers == 5u);
}

TEST_CASE("depth_policy keeps the count inside the limits for counts inside the limits",
          "[scaling][policy][unit]") {
    auto p = make_depth(4, 0.75, 5ms);
    std::mt19937 rng(777);
    std::uniform_int_distribution<std::size_t> depth(0, 64);
    std::uniform_int_distribution<std::size_t> limit(1, 12);
    for (int tick = 0; tick < 20'000; ++tick) {
        std::size_t lo = limit(rng);
        std::size_t hi = limit(rng);
        if (lo > hi) {
            std::swap(lo, hi);
        }
        const std::size_t workers = std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
        const std::size_t idle = std::uniform_int_distribution<std::size_t>(0, workers)(rng);
        const std::size_t want = p(metrics(t0 + tick * 1ms, depth(rng), workers, idle, lo, hi));
        CAPTURE(tick, lo, hi, workers, idle, want);
        REQUIRE(want >= lo);
        REQUIRE(want <= hi);
        // One shrink per tick at most.
        REQUIRE(want + 1 >= workers);
    }
}

TEST_CASE("depth_policy with ratio 1 treats a depth at the mark as low",
          "[scaling][policy][unit]") {
    auto p = make_depth(8, 1.0, 10ms);
    CHECK(p(metrics(t0, 8, 3, 1)) == 3u);
    CHECK(p(metrics(t0 + 10ms, 8, 3, 1)) == 2u);
}

// ------------------------------------------------------------------------------ wait_time_policy

TEST_CASE("wait_time_policy grows by one when the wait is above the target",
          "[scaling][policy][unit]") {
    wait_time_policy p({10ms, 0.5, 100ms});
    CHECK(p(wait_metrics(t0, 10ms, 3, 0)) == 3u);  // at the target: no growth
    CHECK(p(wait_metrics(t0 + 1ms, 10ms + 1ns, 3, 0)) == 4u);
    CHECK(p(wait_metrics(t0 + 2ms, 20ms, 4, 0)) == 5u);  // twice the target is still "one"
}

TEST_CASE("wait_time_policy doubles the workers when the wait is over twice the target",
          "[scaling][policy][unit]") {
    wait_time_policy p({10ms, 0.5, 100ms});
    CHECK(p(wait_metrics(t0, 20ms + 1ns, 3, 0)) == 6u);
    CHECK(p(wait_metrics(t0 + 1ms, 1s, 6, 0)) == 12u);
    CHECK(p(wait_metrics(t0 + 2ms, 1s, 12, 0)) == 16u);  // capped at max_workers
    CHECK(p(wait_metrics(t0 + 3ms, 1s, 16, 0)) == 16u);
}

TEST_CASE("wait_time_policy shrinks after the wait stayed low for a cool-down",
          "[scaling][policy][unit]") {
    wait_time_policy p({10ms, 0.5, 100ms});
    CHECK(p(wait_metrics(t0, 5ms, 4, 2)) == 4u);  // at the low mark: low
    CHECK(p(wait_metrics(t0 + 99ms, 0ns, 4, 2)) == 4u);
    CHECK(p(wait_metrics(t0 + 100ms, 0ns, 4, 2)) == 3u);
    CHECK(p(wait_metrics(t0 + 101ms, 0ns, 3, 2)) == 2u);
    CHECK(p(wait_metrics(t0 + 102ms, 0ns, 2, 2, 2)) == 2u);  // at min_workers
}

TEST_CASE("wait_time_policy holds steady between its marks and after a growth",
          "[scaling][policy][unit]") {
    wait_time_policy p({10ms, 0.5, 100ms});
    CHECK(p(wait_metrics(t0, 50ms, 2, 0)) == 4u);  // growth
    CHECK(p(wait_metrics(t0 + 1ms, 0ns, 4, 4)) == 4u);
    CHECK(p(wait_metrics(t0 + 100ms, 0ns, 4, 4)) == 4u);  // grown 100ms ago, quiet for 99ms
    CHECK(p(wait_metrics(t0 + 101ms, 0ns, 4, 4)) == 3u);
    // Between the marks (5ms, 10ms]: nothing changes, however long.
    std::size_t workers = 3;
    for (int tick = 0; tick < 1000; ++tick) {
        workers = p(wait_metrics(t0 + 200ms + tick * 10ms, 7ms, workers, 1));
    }
    CHECK(workers == 3u);
}
