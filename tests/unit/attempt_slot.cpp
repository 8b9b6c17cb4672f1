// detail::attempt_slot, without threads: each rule of the attempt handshake (issue 15, item 5).

#include <workerpool/detail/attempt_slot.hpp>

#include "support/catch.hpp"

#include <cstdint>
#include <limits>
#include <stop_token>

namespace {

using workerpool::detail::attempt_slot;
using workerpool::detail::attempt_view;
using workerpool::detail::stamp_period;
using workerpool::detail::stop_cause;
using state = attempt_view::state;

constexpr std::int64_t ms = 1'000'000;

}  // namespace

TEST_CASE("attempt_slot: an unbounded attempt runs and ends with no stop", "[attempt_slot][unit]") {
    attempt_slot slot;
    CHECK(slot.look(std::memory_order_acquire).kind == state::idle);
    slot.begin_unbounded();
    const attempt_view v = slot.look(std::memory_order_acquire);
    CHECK(v.kind == state::unbounded);
    CHECK(v.running());
    CHECK(slot.stamp(5 * ms).kind == state::unbounded);  // nothing to stamp
    CHECK(slot.end() == stop_cause::none);
    CHECK(slot.look(std::memory_order_acquire).kind == state::idle);
    CHECK_FALSE(slot.token().stop_requested());
}

TEST_CASE("attempt_slot: a timed attempt is stamped once, at now + its timeout",
          "[attempt_slot][unit]") {
    attempt_slot slot;
    const bool fenced = GENERATE(false, true);
    slot.begin_timed(20 * ms, fenced);
    CHECK(slot.look(std::memory_order_acquire).kind == state::unstamped);
    CHECK(slot.timeout_ns() == 20 * ms);
    const attempt_view stamped = slot.stamp(100 * ms);
    CHECK(stamped.kind == state::deadline);
    CHECK(stamped.deadline_ns == 120 * ms);
    const attempt_view again = slot.stamp(150 * ms);  // a later round does not move it
    CHECK(again.kind == state::deadline);
    CHECK(again.deadline_ns == 120 * ms);
    CHECK(slot.end() == stop_cause::none);
}

TEST_CASE("attempt_slot: a timeout too long to add to now stamps as never, not as a marker",
          "[attempt_slot][unit]") {
    attempt_slot slot;
    slot.begin_timed(std::numeric_limits<std::int64_t>::max(), false);
    const attempt_view v = slot.stamp(1000 * ms);
    CHECK(v.kind == state::deadline);  // still a deadline: the largest one (146 years away)
    CHECK(v.deadline_ns == (std::int64_t{1} << 62) - 1);
    CHECK(slot.end() == stop_cause::none);
}

TEST_CASE("attempt_slot: a stop reaches the token, its callbacks and the end of the attempt",
          "[attempt_slot][unit]") {
    attempt_slot slot;
    const stop_cause cause = GENERATE(stop_cause::deadline, stop_cause::shutdown);
    slot.begin_timed(10 * ms, false);
    const attempt_view v = slot.stamp(0);
    bool callback_ran = false;
    {
        std::stop_callback on_stop(slot.token(), [&callback_ran] { callback_ran = true; });
        CHECK(slot.try_stop(v, cause));
        CHECK(callback_ran);  // on the stopper's thread, inside try_stop
        CHECK(slot.token().stop_requested());
        CHECK(slot.look(std::memory_order_acquire).kind == state::stopped);
        CHECK(slot.cause() == cause);
        CHECK_FALSE(slot.try_stop(slot.look(std::memory_order_acquire), cause));  // once only
    }
    CHECK(slot.end() == cause);
    // The spent source was replaced: the next attempt starts with a token not stopped.
    CHECK_FALSE(slot.token().stop_requested());
    slot.begin_unbounded();
    CHECK_FALSE(slot.token().stop_requested());
    CHECK(slot.end() == stop_cause::none);
}

TEST_CASE("attempt_slot: a view of an earlier attempt can neither stop nor stamp the next one",
          "[attempt_slot][unit]") {
    attempt_slot slot;
    slot.begin_timed(10 * ms, false);
    const attempt_view first = slot.look(std::memory_order_acquire);
    CHECK(slot.end() == stop_cause::none);
    slot.begin_timed(10 * ms, false);  // attempt n + 1: another unstamped word
    CHECK_FALSE(slot.try_stop(first, stop_cause::deadline));
    CHECK_FALSE(slot.token().stop_requested());
    const attempt_view second = slot.look(std::memory_order_acquire);
    CHECK(second.kind == state::unstamped);
    CHECK(second.word != first.word);
    CHECK(slot.end() == stop_cause::none);
    // Nothing runs: no view stops anything.
    CHECK_FALSE(slot.try_stop(slot.look(std::memory_order_acquire), stop_cause::shutdown));
}

TEST_CASE("stamp_period is 5 % of the timeout within [1 ms, the scale interval]",
          "[attempt_slot][unit]") {
    CHECK(stamp_period(20 * ms, 50 * ms) == 1 * ms);       // 5 % is 1 ms
    CHECK(stamp_period(10 * ms, 50 * ms) == 1 * ms);       // never below 1 ms
    CHECK(stamp_period(400 * ms, 50 * ms) == 20 * ms);     // 5 %
    CHECK(stamp_period(10'000 * ms, 50 * ms) == 50 * ms);  // capped by the interval
    CHECK(stamp_period(10'000 * ms, 0) == 1 * ms);         // an interval under 1 ms counts as 1
    CHECK(stamp_period(std::numeric_limits<std::int64_t>::max(), 50 * ms) == 50 * ms);
}
