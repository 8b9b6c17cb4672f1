// detail::completion_slot and detail::completion_slab (issue 19), without a pool: each rule of
// the state word, the cancel from every state, the references, and the slab's reuse and growth.

#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/tracking.hpp>

#include "support/catch.hpp"
#include "support/counting_listener.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <cstddef>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using workerpool::failure_reason;
using workerpool::request_state;
using workerpool::detail::attempt_slot;
using workerpool::detail::completion;
using workerpool::detail::completion_slab;
using workerpool::detail::completion_slot;
using workerpool::detail::group_link;

// Counts the ends a group would hear of.
struct ends_heard final : group_link {
    std::vector<request_state> heard;
    void ended(completion_slot& /*slot*/, request_state final) noexcept override {
        heard.push_back(final);
    }
};

struct slab_fixture {
    std::shared_ptr<completion_slab<int>> slab = std::make_shared<completion_slab<int>>();
};

}  // namespace

TEST_CASE_METHOD(slab_fixture, "a slot runs queued, running, retry_wait, running, succeeded",
                 "[completion][unit]") {
    completion<int>& s = slab->acquire(2);
    CHECK(s.state() == request_state::queued);
    CHECK_FALSE(s.done());
    REQUIRE(s.start());
    CHECK(s.state() == request_state::running);
    REQUIRE(s.to_retry_wait(1, std::make_exception_ptr(std::runtime_error("x"))));
    CHECK(s.state() == request_state::retry_wait);
    REQUIRE(s.start());
    REQUIRE(s.begin_final());
    CHECK(s.state() == request_state::running);  // ending reads as running
    CHECK_FALSE(s.cancel());                     // the end is decided: too late
    s.set_value(42);
    CHECK_FALSE(s.finish(request_state::succeeded, failure_reason::error, 2, nullptr));
    CHECK(s.done());
    CHECK(s.state() == request_state::succeeded);
    CHECK(s.take_value() == 42);
    CHECK(s.attempts() == 2u);
    s.release();
    s.release();
}

TEST_CASE_METHOD(slab_fixture, "a queued slot cancelled ends at once, and the worker's start fails",
                 "[completion][cancel][unit]") {
    ends_heard group;
    completion<int>& s = slab->acquire(2);
    s.join(&group);
    REQUIRE(s.cancel());
    CHECK(s.done());
    CHECK(s.state() == request_state::cancelled);
    CHECK(s.reason() == failure_reason::cancelled);
    CHECK_FALSE(s.cancel());
    CHECK(group.heard.empty());  // the group hears when the pool lets go, not before
    CHECK_FALSE(s.start());
    CHECK_FALSE(s.begin_final());
    // The pool lets go: the end stays cancelled whatever it passes.
    (void)s.finish(request_state::failed, failure_reason::error, 0, nullptr);
    CHECK(s.state() == request_state::cancelled);
    REQUIRE(group.heard.size() == 1);
    CHECK(group.heard[0] == request_state::cancelled);
    s.release();
    s.release();
}

TEST_CASE_METHOD(slab_fixture,
                 "a watched slot tells its listener of a cancel once, an unwatched one "
                 "tells nobody, and a watch after the cancel tells it at once",
                 "[completion][cancel][unit]") {
    workerpool::test::counting_listener heard;
    completion<int>& watched = slab->acquire(1);
    watched.watch(heard);
    REQUIRE(watched.cancel());
    CHECK(heard.calls == 1);
    CHECK_FALSE(watched.cancel());
    CHECK(heard.calls == 1);
    watched.unwatch();
    watched.watch(heard);  // cancelled already: told at once
    CHECK(heard.calls == 2);
    watched.unwatch();
    completion<int>& unwatched = slab->acquire(1);
    unwatched.watch(heard);
    unwatched.unwatch();
    REQUIRE(unwatched.cancel());
    CHECK(heard.calls == 2);
    completion<int>& retrying = slab->acquire(1);  // retry_wait, watched: told too
    REQUIRE(retrying.start());
    REQUIRE(retrying.to_retry_wait(1, nullptr));
    retrying.watch(heard);
    REQUIRE(retrying.cancel());
    CHECK(heard.calls == 3);
    retrying.unwatch();
    watched.release();
    unwatched.release();
    retrying.release();
}

TEST_CASE_METHOD(slab_fixture, "a slot cancelled in retry_wait keeps its attempts and error",
                 "[completion][cancel][unit]") {
    completion<int>& s = slab->acquire(2);
    REQUIRE(s.start());
    REQUIRE(s.to_retry_wait(3, std::make_exception_ptr(std::runtime_error("late"))));
    REQUIRE(s.cancel());
    CHECK(s.state() == request_state::cancelled);
    CHECK(s.attempts() == 3u);
    CHECK(s.error() != nullptr);
    CHECK_FALSE(s.start());  // the delay queue's release finds it cancelled
    (void)s.finish(request_state::cancelled, failure_reason::cancelled, 3, s.error());
    s.release();
    s.release();
}

TEST_CASE_METHOD(slab_fixture,
                 "a running slot cancelled stops the attached attempt and cannot "
                 "retry or succeed",
                 "[completion][cancel][unit]") {
    attempt_slot attempt;
    completion<int>& s = slab->acquire(2);
    REQUIRE(s.start());
    attempt.begin_unbounded();
    s.attach(attempt);
    CHECK_FALSE(attempt.token().stop_requested());
    REQUIRE(s.cancel());
    CHECK(attempt.token().stop_requested());
    CHECK(attempt.cause() == workerpool::detail::stop_cause::cancelled);
    CHECK(s.state() == request_state::running);  // until the handler returns
    CHECK_FALSE(s.cancel());
    s.detach();
    CHECK(attempt.end() == workerpool::detail::stop_cause::cancelled);
    CHECK_FALSE(s.to_retry_wait(1, nullptr));
    CHECK_FALSE(s.begin_final());
    (void)s.finish(request_state::cancelled, failure_reason::cancelled, 1, nullptr);
    CHECK(s.state() == request_state::cancelled);
    s.release();
    s.release();
}

TEST_CASE_METHOD(slab_fixture,
                 "a cancel between start and attach stops the attempt as it is "
                 "attached",
                 "[completion][cancel][unit]") {
    attempt_slot attempt;
    completion<int>& s = slab->acquire(2);
    REQUIRE(s.start());
    REQUIRE(s.cancel());  // no attempt attached yet
    attempt.begin_unbounded();
    s.attach(attempt);
    CHECK(attempt.token().stop_requested());
    s.detach();
    (void)attempt.end();
    (void)s.finish(request_state::cancelled, failure_reason::cancelled, 1, nullptr);
    s.release();
    s.release();
}

TEST_CASE_METHOD(slab_fixture, "a slot's last reference gives it back, and the slab reuses it",
                 "[completion][slab][unit]") {
    completion<int>& a = slab->acquire(2);
    completion<int>* const first = &a;
    a.set_value(1);
    REQUIRE(a.begin_final());
    (void)a.finish(request_state::succeeded, failure_reason::error, 1, nullptr);
    a.release();
    completion<int>& other = slab->acquire(1);  // a is still referenced: not handed out
    CHECK(&other != first);
    other.release();
    a.release();  // the last reference
    // Free slots come back last-in first-out: the next acquire sees the reset slot.
    completion<int>& again = slab->acquire(2);
    CHECK(&again == first);
    CHECK(again.state() == request_state::queued);
    CHECK(again.attempts() == 0u);
    again.release();
    again.release();
}

TEST_CASE_METHOD(slab_fixture,
                 "the slab grows in chunks when more slots live than ever, and "
                 "slots never move",
                 "[completion][slab][unit]") {
    constexpr std::size_t n = 64 + 128 + 256 + 5;  // into the fourth chunk
    std::vector<completion<int>*> live;
    std::set<completion<int>*> distinct;
    for (std::size_t i = 0; i < n; ++i) {
        completion<int>& s = slab->acquire(1);
        s.set_value(static_cast<int>(i));
        live.push_back(&s);
        distinct.insert(&s);
    }
    CHECK(distinct.size() == n);
    for (std::size_t i = 0; i < n; ++i) {
        CHECK(live[i]->take_value() == static_cast<int>(i));  // no slot moved or was reused
    }
    for (completion<int>* s : live) {
        s->release();
    }
    // All back: as many again come from the free list, the same addresses.
    std::set<completion<int>*> second;
    for (std::size_t i = 0; i < n; ++i) {
        second.insert(&slab->acquire(1));
    }
    CHECK(second == distinct);
    for (completion<int>* s : second) {
        s->release();
    }
}

TEST_CASE_METHOD(slab_fixture, "threads taking and giving back slots at once never share one",
                 "[completion][slab][unit]") {
    constexpr int threads = 4;
    const int rounds = workerpool::test::under_tsan ? 200 : 2000;
    constexpr int held = 40;  // each thread holds this many at once: the slab must grow
    std::atomic<int> clashes{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            std::vector<completion<int>*> mine;
            for (int r = 0; r < rounds; ++r) {
                for (int i = 0; i < held; ++i) {
                    completion<int>& s = slab->acquire(1);
                    s.set_value(t * 1'000'000 + r * held + i);
                    mine.push_back(&s);
                }
                for (int i = 0; i < held; ++i) {
                    // Another thread holding the same slot would have overwritten the value.
                    if (mine[static_cast<std::size_t>(i)]->take_value() !=
                        t * 1'000'000 + r * held + i) {
                        clashes.fetch_add(1);
                    }
                    mine[static_cast<std::size_t>(i)]->release();
                }
                mine.clear();
            }
        });
    }
    for (std::thread& t : ts) {
        t.join();
    }
    CHECK(clashes.load() == 0);
}
