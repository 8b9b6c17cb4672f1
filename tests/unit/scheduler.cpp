// detail::scheduler and detail::token_rate, without threads (issue 20): one request per key at a
// time in submit order, keys taking turns, lanes and their bounds, aging, not_before, the pool's
// and the keys' tokens, pause, retries holding their key, and what shutdown hands back in what
// order. The clock is passed in: every time here is made up.

#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/detail/token_bucket.hpp>

#include "support/catch.hpp"
#include "support/counting_listener.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

// GCC 12 at -O1 with the sanitizers warns that the exception_ptr inside an engaged-later
// std::optional<envelope> "may be used uninitialized" (a false positive: it is built before any
// read); the warning is an error in our builds.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace {

using envelope = workerpool::detail::envelope<int>;
using scheduler = workerpool::detail::scheduler<envelope>;
using workerpool::rate_limit_settings;
using workerpool::submit_status;
using workerpool::detail::request_settings;
using workerpool::detail::schedule_settings;
using workerpool::detail::scheduled_turn;
using workerpool::detail::token_rate;

constexpr std::int64_t ms = 1'000'000;
constexpr std::int64_t never = workerpool::detail::never;

schedule_settings settings(std::size_t lanes = 1, std::size_t capacity = 100,
                           std::int64_t aging_ns = 0) {
    schedule_settings s;
    s.lanes = lanes;
    s.lane_capacity = capacity;
    s.aging_ns = aging_ns;
    return s;
}

// Submits request `id` at time `now`.
scheduler::admitted submit(scheduler& s, int id, std::int64_t now, std::uint64_t key = 0,
                           unsigned lane = 0, std::int64_t not_before = 0) {
    return s.submit({key, lane, not_before}, now, int{id}, request_settings{}, std::int64_t{0},
                    nullptr);
}

// A worker's view: takes one request at `now` and, unless `keep`, finishes it at once.
struct taker {
    explicit taker(scheduler& sch) : s(sch) {}
    scheduler& s;
    std::optional<envelope> current;
    scheduled_turn turn;

    // The id taken at `now`, or -1.
    int take(std::int64_t now) {
        current.reset();
        const auto t = s.take(now, current, turn);
        return t.got ? current->request : -1;
    }
    int take_and_finish(std::int64_t now) {
        const int id = take(now);
        if (id != -1) {
            (void)s.finish(turn, now);
        }
        return id;
    }
};

std::vector<int> ids(const std::vector<envelope>& es) {
    std::vector<int> out;
    for (const envelope& e : es) {
        out.push_back(e.request);
    }
    return out;
}

}  // namespace

TEST_CASE("token_rate: a burst at once, then one token per interval", "[scheduler][unit]") {
    const token_rate r = token_rate::of(rate_limit_settings{100.0, 3});  // 10 ms per token
    REQUIRE(r.on());
    CHECK(r.interval_ns == 10 * ms);
    std::int64_t tat = 0;
    const std::int64_t t0 = 1000 * ms;
    CHECK(r.take(tat, t0));
    CHECK(r.take(tat, t0));
    CHECK(r.take(tat, t0));
    CHECK_FALSE(r.take(tat, t0));  // the burst is spent
    CHECK(r.next_token(tat) == t0 + 10 * ms);
    CHECK_FALSE(r.take(tat, t0 + 10 * ms - 1));
    CHECK(r.take(tat, t0 + 10 * ms));
    CHECK_FALSE(token_rate::full(tat, t0 + 10 * ms));
    CHECK(token_rate::full(tat, t0 + 40 * ms));
    // Off: always a token; a tiny rate saturates instead of overflowing.
    std::int64_t any = 0;
    CHECK(token_rate::of(rate_limit_settings{}).take(any, 0));
    const token_rate slow = token_rate::of(rate_limit_settings{1e-30, 1});
    CHECK(slow.take(any, 0));
    CHECK_FALSE(slow.take(any, 1'000'000 * ms));
}

TEST_CASE("scheduler: one request per key at a time, in submit order, and keys take turns",
          "[scheduler][unit]") {
    scheduler s(settings());
    CHECK(submit(s, 1, 0, 7).ready);
    CHECK_FALSE(submit(s, 2, 0, 7).ready);  // behind 1
    CHECK_FALSE(submit(s, 3, 0, 7).ready);
    CHECK(submit(s, 10, 0, 9).ready);  // another key: ready at once
    CHECK(s.held() == 4);
    taker w{s};
    CHECK(w.take(1) == 1);
    taker other{s};
    CHECK(other.take(1) == 10);  // key 7 is running: its 2 is not ready
    CHECK(other.take(1) == -1);
    const auto r = s.finish(w.turn, 2);  // 1 ended: 2 moves up
    CHECK(r.ready == 1);
    CHECK(other.take(3) == 2);
    CHECK(other.take(3) == -1);  // 3 waits for 2
    (void)s.finish(other.turn, 4);
    CHECK(w.take_and_finish(5) == 3);
    (void)s.finish(scheduled_turn{9, 0, true, false}, 6);
    CHECK(s.empty());
    CHECK(s.accepted() == 4);
}

TEST_CASE("scheduler: finish_then_take finishes first, then takes the oldest ready request",
          "[scheduler][unit]") {
    std::optional<envelope> out;
    scheduled_turn next;
    SECTION("the key's next request, when it is the only one, is taken in the same call") {
        scheduler s(settings());
        (void)submit(s, 1, 0, 7);
        (void)submit(s, 2, 0, 7);  // behind 1: only the finish of 1 makes it ready
        taker w{s};
        REQUIRE(w.take(1) == 1);
        auto ft = s.finish_then_take(w.turn, 2, out, next);
        CHECK(ft.finished.ready == 1);
        CHECK(ft.looked);
        REQUIRE(ft.next.got);
        CHECK(out->request == 2);
        CHECK(next.key == 7);
        out.reset();
        const scheduled_turn done = next;
        ft = s.finish_then_take(done, 3, out, next);  // key 7 drains: nothing to take, no look
        CHECK(ft.finished.ready == 0);
        CHECK_FALSE(ft.looked);
        CHECK_FALSE(ft.next.got);
        CHECK(s.empty());
    }
    SECTION("other keys' ready requests go first, and a retried turn keeps its key") {
        scheduler s(settings());
        (void)submit(s, 1, 0, 7);
        (void)submit(s, 2, 0, 7);
        (void)submit(s, 10, 0, 9);
        (void)submit(s, 11, 0, 9);  // behind 10
        (void)submit(s, 20, 0, 0);
        taker w{s};
        REQUIRE(w.take(1) == 1);
        // 1 ended: 2 moves up behind 10 and 20, which were ready first and go first.
        auto ft = s.finish_then_take(w.turn, 2, out, next);
        CHECK(ft.finished.ready == 1);
        REQUIRE(ft.next.got);
        CHECK(out->request == 10);
        CHECK(next.key == 9);
        // 10's attempt failed and it waits to retry (this test does not hand the retry over):
        // key 9 stays held, so 11 stays behind it.
        out.reset();
        scheduled_turn done = next;
        done.retried = true;
        ft = s.finish_then_take(done, 3, out, next);
        CHECK(ft.finished.ready == 0);
        REQUIRE(ft.next.got);
        CHECK(out->request == 20);
        CHECK(next.key == 0);
        out.reset();
        done = next;
        ft = s.finish_then_take(done, 4, out, next);  // a request without a key: nothing to finish
        REQUIRE(ft.next.got);
        CHECK(out->request == 2);
        out.reset();
        done = next;
        ft = s.finish_then_take(done, 5, out, next);
        CHECK_FALSE(ft.next.got);  // key 7 drained; 11 still waits behind the retried 10
        CHECK(s.held() == 1);
    }
}

TEST_CASE("scheduler: finish_then_take does not take while the pool's rate blocks",
          "[scheduler][unit]") {
    schedule_settings st = settings();
    st.pool_rate = token_rate::of(rate_limit_settings{1.0, 1});  // one token, then one a second
    scheduler s(st);
    const std::int64_t t0 = 1000 * ms;
    (void)submit(s, 1, t0, 7);
    (void)submit(s, 2, t0, 7);  // behind 1
    (void)submit(s, 3, t0, 0);
    taker w{s};
    REQUIRE(w.take(t0) == 1);  // the burst's token
    taker other{s};
    CHECK(other.take(t0) == -1);  // 3 has no token: the pool is blocked until the next one
    std::optional<envelope> out;
    scheduled_turn next;
    const auto ft = s.finish_then_take(w.turn, t0 + 1, out, next);
    CHECK(ft.finished.ready == 0);  // 2 moved up, but no worker may take it yet
    CHECK_FALSE(ft.looked);         // nothing may be taken before the supervisor's release
    CHECK_FALSE(ft.next.got);
    CHECK_FALSE(out.has_value());
}

TEST_CASE("scheduler: a key's backlog does not starve a key with one request",
          "[scheduler][unit]") {
    scheduler s(settings(1, 20'000));
    for (int i = 0; i < 10'000; ++i) {
        (void)submit(s, i, 0, 1);
    }
    (void)submit(s, -5, 0, 2);
    taker w{s};
    int before_b = 0;
    for (;;) {
        const int id = w.take_and_finish(1);
        REQUIRE(id != -1);
        if (id == -5) {
            break;
        }
        ++before_b;
    }
    CHECK(before_b <= 1);
}

TEST_CASE("scheduler: a higher lane first, and a full lane refuses only its own",
          "[scheduler][unit]") {
    scheduler s(settings(3, 2));
    CHECK(submit(s, 1, 0, 0, 0).status == submit_status::accepted);
    CHECK(submit(s, 2, 0, 0, 0).status == submit_status::accepted);
    CHECK(submit(s, 3, 0, 0, 0).status == submit_status::full);
    CHECK(submit(s, 20, 0, 0, 2).status == submit_status::accepted);
    CHECK(submit(s, 21, 0, 0, 9).status == submit_status::accepted);  // above the top: the top
    CHECK(submit(s, 22, 0, 0, 2).status == submit_status::full);
    CHECK(submit(s, 10, 0, 0, 1).status == submit_status::accepted);
    taker w{s};
    std::vector<int> order;
    for (int id = w.take_and_finish(1); id != -1; id = w.take_and_finish(1)) {
        order.push_back(id);
    }
    CHECK(order == std::vector<int>{20, 21, 10, 1, 2});
    CHECK(submit(s, 3, 2, 0, 0).status == submit_status::accepted);  // room again
}

TEST_CASE("scheduler: a request ready for k agings is served k lanes higher, older first",
          "[scheduler][unit]") {
    scheduler s(settings(3, 100, 10 * ms));
    (void)submit(s, 1, 0, 0, 0);        // lane 0 at 0
    (void)submit(s, 2, 15 * ms, 0, 1);  // lane 1 at 15 ms
    (void)submit(s, 3, 16 * ms, 0, 2);  // lane 2 at 16 ms
    taker w{s};
    // At 16 ms: 1 ranks 0 + 1 = 1, 2 ranks 1, 3 ranks 2.
    CHECK(w.take_and_finish(16 * ms) == 3);
    // At 21 ms: 1 ranks 0 + 2 = 2 (the top), 2 ranks 1 + 0: 1 first.
    CHECK(w.take_and_finish(21 * ms) == 1);
    CHECK(w.take_and_finish(21 * ms) == 2);
    // Without aging the lane alone decides.
    scheduler plain(settings(2, 100, 0));
    (void)submit(plain, 1, 0, 0, 0);
    (void)submit(plain, 2, 1000 * ms, 0, 1);
    taker p{plain};
    CHECK(p.take_and_finish(100'000 * ms) == 2);
}

TEST_CASE("scheduler: not_before holds a request until the supervisor releases it",
          "[scheduler][unit]") {
    scheduler s(settings());
    const auto a = submit(s, 1, 0, 0, 0, 50 * ms);
    CHECK_FALSE(a.ready);
    CHECK(a.due == 50 * ms);
    CHECK(s.next_wake() == 50 * ms);
    taker w{s};
    CHECK(w.take(49 * ms) == -1);
    CHECK(s.release_due(49 * ms).ready == 0);
    const auto r = s.release_due(50 * ms);
    CHECK(r.ready == 1);
    CHECK(r.next_due == never);
    CHECK(w.take_and_finish(50 * ms) == 1);
    // A key's head waiting for its time holds the key.
    (void)submit(s, 2, 100 * ms, 3, 0, 200 * ms);
    CHECK_FALSE(submit(s, 3, 100 * ms, 3).ready);
    (void)s.release_due(200 * ms);
    CHECK(w.take_and_finish(200 * ms) == 2);
    CHECK(w.take_and_finish(200 * ms) == 3);
}

TEST_CASE("scheduler: the pool's tokens stop takes until the next one, and keys wait apart",
          "[scheduler][unit]") {
    schedule_settings pool_limited = settings();
    pool_limited.pool_rate = token_rate::of(rate_limit_settings{100.0, 1});  // 10 ms
    scheduler s(pool_limited);
    (void)submit(s, 1, 0);
    (void)submit(s, 2, 0);
    taker w{s};
    CHECK(w.take_and_finish(1000 * ms) == 1);
    std::optional<envelope> out;
    scheduled_turn turn;
    const auto t = s.take(1000 * ms, out, turn);
    CHECK_FALSE(t.got);
    CHECK(t.pool_throttled);
    CHECK(t.due == 1010 * ms);
    CHECK_FALSE(s.has_ready());  // workers stop looking
    CHECK(s.throttled() == 1);
    CHECK(s.release_due(1010 * ms).ready == 1);
    CHECK(w.take_and_finish(1010 * ms) == 2);

    schedule_settings key_limited = settings();
    key_limited.key_rate = token_rate::of(rate_limit_settings{100.0, 1});
    scheduler k(key_limited);
    (void)submit(k, 1, 0, 5);
    (void)submit(k, 2, 0, 5);
    (void)submit(k, 3, 0, 6);
    taker kw{k};
    CHECK(kw.take_and_finish(1000 * ms) == 1);
    CHECK(kw.take_and_finish(1001 * ms) == 3);  // key 6 was ready before key 5's 2
    // Key 5's next token is 10 ms away: 2 waits aside, holding no worker.
    std::optional<envelope> o;
    const auto kt = k.take(1005 * ms, o, turn);
    CHECK_FALSE(kt.got);
    CHECK(kt.key_throttled == 1);
    CHECK(kt.due == 1010 * ms);
    CHECK(k.next_wake() == 1010 * ms);  // key 6's bucket, kept aside, is dropped later
    CHECK(k.release_due(1010 * ms).ready == 1);
    CHECK(kw.take_and_finish(1010 * ms) == 2);
}

TEST_CASE("scheduler: a retry keeps its key until it ends", "[scheduler][unit]") {
    scheduler s(settings());
    (void)submit(s, 1, 0, 4);
    (void)submit(s, 2, 0, 4);
    taker w{s};
    CHECK(w.take(0) == 1);
    REQUIRE(s.retry(30 * ms, std::move(*w.current), w.turn));
    CHECK(s.retries_waiting() == 1);
    CHECK(w.take(10 * ms) == -1);  // 2 waits: its key is held by 1's retry
    CHECK(s.release_due(30 * ms).ready == 1);
    CHECK(w.take(30 * ms) == 1);
    (void)s.finish(w.turn, 31 * ms);
    CHECK(w.take_and_finish(31 * ms) == 2);
    CHECK(s.empty());
}

TEST_CASE("scheduler: shutdown hands back what waits for a time at once, the rest in key order",
          "[scheduler][unit]") {
    scheduler s(settings(2, 100));
    (void)submit(s, 1, 0, 8);  // key 8's first: taken below
    (void)submit(s, 2, 0, 8);  // behind it
    (void)submit(s, 3, 0, 8);
    (void)submit(s, 10, 0, 9, 0, 500 * ms);  // key 9 waits for a time...
    (void)submit(s, 11, 0, 9);               // ...and 11 behind it
    (void)submit(s, 20, 0, 0, 1);            // ready, lane 1
    (void)submit(s, 30, 0, 0, 0);            // ready, lane 0
    taker w{s};
    CHECK(w.take(0) == 20);
    CHECK(w.take(0) == 1);  // key 8's first runs
    s.close();
    CHECK(submit(s, 99, 0).status == submit_status::closed);
    std::vector<envelope> out;
    s.start_drain_into(out);
    CHECK(ids(out) == std::vector<int>{10, 11});
    // Key 8's first fails during the drain: it goes back, and its key's later requests with it
    // (they could not start any more; the draining workers need not wait for them).
    CHECK_FALSE(s.retry(0, envelope(int{1}, request_settings{}, 0), w.turn));
    CHECK(s.held() == 1);  // 30 alone
    out.clear();
    s.drain_into(out);
    CHECK(ids(out) == std::vector<int>{1, 2, 3, 30});
    CHECK(s.empty());
}

TEST_CASE("scheduler: pause clears nothing and says so once", "[scheduler][unit]") {
    scheduler s(settings());
    CHECK(s.set_paused(true));
    CHECK_FALSE(s.set_paused(true));
    CHECK(s.paused());
    (void)submit(s, 1, 0);
    CHECK_FALSE(s.has_ready());
    CHECK(s.attention() != 0);
    CHECK(s.set_paused(false));
    CHECK(s.has_ready());
}

TEST_CASE("scheduler: a request queued behind its key keeps its not_before", "[scheduler][unit]") {
    scheduler s(settings());
    CHECK(submit(s, 1, 0, 5).ready);
    const auto second = submit(s, 2, 0, 5, 0, 500 * ms);  // behind 1, and not before 500 ms
    CHECK_FALSE(second.ready);
    taker w{s};
    CHECK(w.take(0) == 1);
    const auto r = s.finish(w.turn, 10 * ms);  // 1 ended: 2 moves up, to wait for its time
    CHECK(r.ready == 0);
    CHECK(r.next_due == 500 * ms);
    CHECK(w.take(10 * ms) == -1);
    CHECK(s.release_due(500 * ms).ready == 1);
    CHECK(w.take_and_finish(500 * ms) == 2);
}

TEST_CASE("scheduler: a producer waiting for room in a full lane wakes for a batch, not a slot",
          "[scheduler][unit]") {
    scheduler s(settings(1, 8));  // a batch of 2 slots
    for (int i = 0; i < 8; ++i) {
        REQUIRE(submit(s, i, 0).status == submit_status::accepted);
    }
    taker w{s};
    CHECK(w.take_and_finish(0) == 0);
    // One slot free: not yet a batch, so a waiter would keep sleeping (until a deadline here).
    CHECK_FALSE(s.wait_for_room(0, std::chrono::steady_clock::now()));
    CHECK(w.take_and_finish(0) == 1);
    CHECK(s.wait_for_room(0, std::chrono::steady_clock::now()));
    s.close();
    CHECK(s.wait_for_room(0, std::nullopt));  // closed: no wait
}

TEST_CASE("scheduler: a request cancelled while it waits for a time or behind its key is purged, "
          "and its key moves on",
          "[scheduler][cancel][unit]") {
    workerpool::test::counting_listener heard;
    const auto slab = std::make_shared<workerpool::detail::completion_slab<void>>();
    auto& timed = slab->acquire(1);   // key 7's holder, waiting for its not_before
    auto& behind = slab->acquire(1);  // behind it in key 7's FIFO
    auto& ready = slab->acquire(1);   // key 8's, ready at once
    scheduler s(settings(), &heard);
    const std::int64_t t0 = 1000 * ms;
    const auto tracked = [&](int id, std::uint64_t key, std::int64_t not_before,
                             workerpool::detail::completion_slot* slot) {
        return s.submit({key, 0, not_before}, t0, int{id}, request_settings{}, std::int64_t{0},
                        slot);
    };
    REQUIRE(tracked(1, 7, t0 + 3600'000 * ms, &timed).status == submit_status::accepted);
    REQUIRE(tracked(2, 7, 0, &behind).status == submit_status::accepted);
    REQUIRE(submit(s, 3, t0, 7).status == submit_status::accepted);
    REQUIRE(tracked(4, 8, 0, &ready).status == submit_status::accepted);
    CHECK(s.held() == 4u);

    // A ready request is not watched: its cancel tells nobody (a worker takes it soon).
    REQUIRE(ready.cancel());
    CHECK(heard.calls == 0);
    // Behind its key: told at once; the purge takes it out of the FIFO, the holder stays.
    REQUIRE(behind.cancel());
    CHECK(heard.calls == 1);
    std::vector<envelope> out;
    auto r = s.purge_cancelled(t0, out);
    CHECK(ids(out) == std::vector<int>{2});
    CHECK(r.ready == 0u);
    CHECK(s.held() == 3u);
    // The timed holder: the purge takes it out and key 7's next request becomes ready.
    REQUIRE(timed.cancel());
    CHECK(heard.calls == 2);
    out.clear();
    r = s.purge_cancelled(t0, out);
    CHECK(ids(out) == std::vector<int>{1});
    CHECK(r.ready == 1u);
    CHECK(r.next_due == never);  // nothing waits for a time any more
    CHECK(s.held() == 2u);
    taker w(s);
    CHECK(w.take_and_finish(t0) == 4);  // key 8's (a worker ends it without running it)
    CHECK(w.take_and_finish(t0) == 3);
    CHECK(s.empty());
    out.clear();
    CHECK(s.purge_cancelled(t0, out).ready == 0u);  // nothing left: a purge finds nothing
    CHECK(out.empty());
    timed.release();
    behind.release();
    ready.release();
}
