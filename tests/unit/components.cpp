// Small components, without threads (issue 15, item 5): counters, the lifecycle, the idle stack's
// bookkeeping, and the back-pressure submit loop's refusals.

#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/counters.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/detail/sharded_queue.hpp>
#include <workerpool/stats.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::submit_status;
using workerpool::detail::counter;

struct sleeper {
    workerpool::detail::idle_entry idle;
};

}  // namespace

TEST_CASE("counter_totals fill each stats field from its own counter", "[counters][unit]") {
    workerpool::detail::counter_set set;
    const counter kinds[] = {counter::completed, counter::failed, counter::retried,
                             counter::timed_out, counter::late,   counter::cancelled,
                             counter::expired};
    for (std::size_t k = 0; k < 7; ++k) {
        for (std::size_t n = 0; n <= k; ++n) {
            set.bump(kinds[k]);  // kind k counts k + 1
        }
    }
    CHECK(set.get(counter::retried) == 3u);
    CHECK(set.get_acquire(counter::failed) == 2u);
    workerpool::detail::counter_totals t;
    set.add_to(t);
    set.add_to(t);  // a second worker with the same counts
    workerpool::stats_snapshot s;
    t.fill(s);
    CHECK(s.completed == 2u);
    CHECK(s.failed == 4u);
    CHECK(s.retried == 6u);
    CHECK(s.timed_out == 8u);
    CHECK(s.late == 10u);
    CHECK(s.cancelled == 12u);
    CHECK(s.expired == 14u);
}

TEST_CASE("lifecycle only moves forward", "[lifecycle][unit]") {
    using workerpool::detail::phase;
    workerpool::detail::lifecycle life;
    CHECK_FALSE(life.at_least(phase::closed));
    CHECK(life.advance(phase::draining));
    CHECK(life.at_least(phase::closed));
    CHECK(life.at_least(phase::draining));
    CHECK_FALSE(life.at_least(phase::cancelling));
    CHECK_FALSE(life.advance(phase::closed));  // never back
    CHECK(life.at_least(phase::draining));
    CHECK(life.advance(phase::stopped));
    CHECK_FALSE(life.advance(phase::stopped));
}

TEST_CASE("idle_stack wakes the most recent sleeper first and lists the oldest by cutoff",
          "[idle_stack][unit]") {
    workerpool::detail::idle_stack<sleeper> idle;
    sleeper a;
    sleeper b;
    sleeper c;
    idle.reserve(3);
    idle.push(a, 10);
    idle.push(b, 20);
    idle.push(c, 30);
    CHECK(idle.count() == 3u);
    CHECK(idle.oldest() == &a);
    std::vector<sleeper*> expired;
    CHECK(idle.listed_before(20, expired) == 3u);
    CHECK(expired == std::vector<sleeper*>{&a, &b});
    CHECK(idle.remove(b));  // a sleeper that looked again and found work
    CHECK_FALSE(idle.remove(b));
    CHECK(idle.pop_most_recent() == &c);  // LIFO: warm caches first
    CHECK(idle.wake_up_to(5) == 1u);      // only a is left
    CHECK(a.idle.wake.load() == 1u);      // signalled
    CHECK(idle.count() == 0u);
    CHECK(idle.pop_most_recent() == nullptr);
    // A sleeper that must look again is taken off at once, without waiting.
    CHECK(idle.sleep(b, 40, [] { return true; }));
    CHECK(idle.count() == 0u);
}

TEST_CASE("back_pressure's submit loop gives a self-call or an expired wait full, a closed queue "
          "closed",
          "[backpressure][unit]") {
    using envelope = workerpool::detail::envelope<int>;
    workerpool::detail::sharded_queue<envelope> q(1, 1);
    workerpool::detail::back_pressure bp;
    int pushes = 0;
    const auto push = [&] {
        ++pushes;
        return q.try_emplace(int{pushes}, workerpool::detail::request_settings{}, 0);
    };
    CHECK(bp.submit_until(q, push, false, 0, std::nullopt) == submit_status::accepted);
    // Full: a call from the pool's own thread does not wait.
    CHECK(bp.submit_until(q, push, true, 1'000'000, std::nullopt) == submit_status::full);
    // Full, with its time already over.
    CHECK(bp.submit_until(q, push, false, 0, std::chrono::steady_clock::now() - 1ms) ==
          submit_status::full);
    CHECK_FALSE(bp.waiting());
    (void)q.close();
    CHECK(bp.submit_until(q, push, false, 0, std::nullopt) == submit_status::closed);
    bp.wait_for_callers_to_leave();  // nobody inside: returns at once
}
