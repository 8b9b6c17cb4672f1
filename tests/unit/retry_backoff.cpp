// The retry backoff as pure functions (`backoff_ceiling`, `backoff_delay`, `default_retry_if`):
// no threads, jitter drawn from a seeded generator.

#include <workerpool/retry.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <cstdint>
#include <exception>
#include <random>
#include <stdexcept>

namespace {

using namespace std::chrono_literals;
using workerpool::backoff_ceiling;
using workerpool::backoff_delay;
using workerpool::jitter_mode;
using workerpool::retry_policy;

retry_policy policy(std::chrono::nanoseconds initial, double multiplier,
                    std::chrono::nanoseconds cap, jitter_mode jitter = jitter_mode::none) {
    retry_policy p;
    p.max_attempts = 100;
    p.initial_backoff = initial;
    p.multiplier = multiplier;
    p.max_backoff = cap;
    p.jitter = jitter;
    return p;
}

}  // namespace

TEST_CASE("backoff_ceiling grows by the multiplier per failure and stops at max_backoff",
          "[retry][backoff][unit]") {
    const auto p = policy(10ms, 2.0, 100ms);
    CHECK(backoff_ceiling(p, 1) == 10ms);
    CHECK(backoff_ceiling(p, 2) == 20ms);
    CHECK(backoff_ceiling(p, 3) == 40ms);
    CHECK(backoff_ceiling(p, 4) == 80ms);
    CHECK(backoff_ceiling(p, 5) == 100ms);
    CHECK(backoff_ceiling(p, 6) == 100ms);
}

TEST_CASE("backoff_ceiling follows a fractional multiplier", "[retry][backoff][unit]") {
    const auto p = policy(100ms, 1.5, 10s);
    CHECK(backoff_ceiling(p, 1) == 100ms);
    CHECK(backoff_ceiling(p, 2) == 150ms);
    CHECK(backoff_ceiling(p, 3) == 225ms);
    CHECK(backoff_ceiling(p, 4) == 337500us);
}

TEST_CASE("backoff_ceiling is constant with multiplier 1 and zero with no initial backoff",
          "[retry][backoff][unit]") {
    const auto flat = policy(7ms, 1.0, 1s);
    for (unsigned n = 1; n <= 50; ++n) {
        CAPTURE(n);
        REQUIRE(backoff_ceiling(flat, n) == 7ms);
    }
    const auto zero = policy(0ns, 3.0, 1s);
    CHECK(backoff_ceiling(zero, 1) == 0ns);
    CHECK(backoff_ceiling(zero, 40) == 0ns);
    const auto capped_at_zero = policy(10ms, 2.0, 0ns);
    CHECK(backoff_ceiling(capped_at_zero, 1) == 0ns);
}

TEST_CASE("backoff_ceiling neither overflows nor wraps for huge attempt counts",
          "[retry][backoff][unit]") {
    const auto p = policy(1s, 10.0, std::chrono::hours(24 * 365));
    CHECK(backoff_ceiling(p, 1'000'000) == std::chrono::hours(24 * 365));
    CHECK(backoff_ceiling(p, 0xFFFF'FFFFu) == std::chrono::hours(24 * 365));
    const auto big = policy(1s, 2.0, std::chrono::nanoseconds(INT64_MAX));
    CHECK(backoff_ceiling(big, 30) == std::chrono::seconds(std::int64_t{1} << 29));
}

// Regression: `max_backoff = nanoseconds::max()` ("no cap") made the ceiling INT64_MIN, because
// the double 2^63 does not convert back to int64; a negative backoff retries at once.
TEST_CASE("backoff_ceiling with an unbounded max_backoff saturates instead of going negative",
          "[retry][backoff][unit][regression]") {
    const auto p = policy(1s, 2.0, std::chrono::nanoseconds::max());
    CHECK(backoff_ceiling(p, 20'000) == std::chrono::nanoseconds::max());
    CHECK(backoff_delay(p, 20'000, 0.5) > 0ns);
    auto full = p;
    full.jitter = jitter_mode::full;
    CHECK(backoff_delay(full, 20'000, 1.0) > 0ns);
}

TEST_CASE("backoff_delay without jitter is the ceiling whatever the draw",
          "[retry][backoff][unit]") {
    const auto p = policy(10ms, 2.0, 1s, jitter_mode::none);
    for (double u : {0.0, 0.25, 0.5, 0.999999}) {
        CAPTURE(u);
        CHECK(backoff_delay(p, 3, u) == 40ms);
    }
}

TEST_CASE("backoff_delay with full jitter is the draw times the ceiling",
          "[retry][backoff][unit]") {
    const auto p = policy(10ms, 2.0, 1s, jitter_mode::full);
    CHECK(backoff_delay(p, 3, 0.0) == 0ns);
    CHECK(backoff_delay(p, 3, 0.5) == 20ms);
    CHECK(backoff_delay(p, 3, 0.25) == 10ms);
}

TEST_CASE("backoff_delay with equal jitter lies in the upper half of the ceiling",
          "[retry][backoff][unit]") {
    const auto p = policy(10ms, 2.0, 1s, jitter_mode::equal);
    CHECK(backoff_delay(p, 3, 0.0) == 20ms);
    CHECK(backoff_delay(p, 3, 0.5) == 30ms);
}

TEST_CASE("backoff_delay clamps draws outside [0, 1]", "[retry][backoff][unit]") {
    const auto p = policy(10ms, 2.0, 1s, jitter_mode::full);
    CHECK(backoff_delay(p, 2, -3.0) == 0ns);
    CHECK(backoff_delay(p, 2, 7.0) == 20ms);
}

TEST_CASE("full jitter from a seeded generator stays in range and averages half the ceiling",
          "[retry][backoff][unit]") {
    const auto p = policy(10ms, 2.0, 200ms, jitter_mode::full);
    std::mt19937_64 rng(20240601);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (unsigned n = 1; n <= 8; ++n) {
        const auto ceiling = backoff_ceiling(p, n);
        double sum = 0;
        std::chrono::nanoseconds lo = ceiling;
        std::chrono::nanoseconds hi = 0ns;
        constexpr int draws = 20'000;
        for (int i = 0; i < draws; ++i) {
            const auto d = backoff_delay(p, n, unit(rng));
            lo = std::min(lo, d);
            hi = std::max(hi, d);
            sum += static_cast<double>(d.count());
        }
        const double mean = sum / draws;
        const double half = static_cast<double>(ceiling.count()) / 2;
        CAPTURE(n, ceiling.count(), lo.count(), hi.count(), mean);
        REQUIRE(lo >= 0ns);
        REQUIRE(hi <= ceiling);
        REQUIRE(mean > half * 0.97);
        REQUIRE(mean < half * 1.03);
        // The draws spread over the whole range instead of collapsing on one value.
        REQUIRE(lo < ceiling / 50);
        REQUIRE(hi > ceiling - ceiling / 50);
    }
}

TEST_CASE("the same seed gives the same backoff sequence", "[retry][backoff][unit]") {
    const auto p = policy(5ms, 3.0, 2s, jitter_mode::full);
    auto sequence = [&p](std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        std::vector<std::chrono::nanoseconds> out;
        for (unsigned n = 1; n <= 10; ++n) {
            out.push_back(backoff_delay(p, n, unit(rng)));
        }
        return out;
    };
    CHECK(sequence(99) == sequence(99));
    CHECK(sequence(99) != sequence(100));
}

TEST_CASE("a default retry_policy makes one attempt and uses full jitter",
          "[retry][backoff][unit]") {
    const retry_policy p;
    CHECK(p.max_attempts == 1u);
    CHECK(p.jitter == jitter_mode::full);
    CHECK(backoff_delay(p, 1, 0.5) == p.initial_backoff / 2);
}

TEST_CASE("the default retry rule retries everything except permanent_error",
          "[retry][backoff][unit]") {
    auto ptr = [](auto e) { return std::make_exception_ptr(e); };
    CHECK(workerpool::default_retry_if(ptr(std::runtime_error("transient"))));
    CHECK(workerpool::default_retry_if(ptr(42)));
    CHECK(workerpool::default_retry_if(std::exception_ptr{}));
    CHECK_FALSE(workerpool::default_retry_if(ptr(workerpool::permanent_error("bad input"))));
}
