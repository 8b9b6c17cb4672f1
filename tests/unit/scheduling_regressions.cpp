// Issue 20: defects a cold review of the scheduler found, each test failing before its fix
// (a keyed not_before lost behind its key, a keyed retry during the drain holding shutdown for
// its grace, retry_pending counted down twice, a throttle counted when nothing was ready, a pool
// without workers waiting for its scaling tick).

#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/event_log.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::event_kind;
using workerpool::job_options;
using workerpool::submit_status;
using workerpool::test::event_log;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;

struct item {
    int id = 0;
    clock_type::time_point not_before{};
};

workerpool::options<item> opts(std::size_t workers) {
    workerpool::options<item> o;
    o.capacity = 64;
    o.min_workers = workers;
    o.max_workers = workers;
    o.destructor_grace = 0ns;
    return o;
}

}  // namespace

TEST_CASE("a keyed request's not_before holds when it waited behind its key", "[scheduler][unit]") {
    gate hold;
    finally open_at_end([&] { hold.open(); });
    std::atomic<int> early{0};
    std::atomic<int> done{0};
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.id == 1) {
                (void)hold.wait(st);
            }
            if (clock_type::now() < it.not_before) {
                early.fetch_add(1);
            }
            done.fetch_add(1);
        },
        opts(2));
    REQUIRE(pool.try_submit(item{1, {}}, job_options{.key = 5}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    const auto when = clock_type::now() + 2s;
    REQUIRE(pool.try_submit(item{2, when}, job_options{.key = 5, .not_before = when}) ==
            submit_status::accepted);
    hold.release();
    REQUIRE(eventually([&] { return done.load() == 2; }, 30s));
    (void)pool.shutdown(10s);
    CHECK(early.load() == 0);
}

TEST_CASE("a keyed request that fails during the drain does not hold shutdown for the "
          "whole grace",
          "[scheduler][unit]") {
    gate hold;
    finally open_at_end([&] { hold.open(); });
    event_log events;
    std::atomic<dispatcher<item>*> self{nullptr};
    auto o = opts(1);
    o.retry.max_attempts = 3;
    o.retry.initial_backoff = 1ms;
    o.on_event = events.sink();
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.id != 1) {
                return;
            }
            (void)hold.wait(st);
            // Fails once shutdown has closed intake (and, a moment later, begun the drain).
            while (self.load()->try_submit(item{99, {}}) != submit_status::closed) {
                std::this_thread::yield();
            }
            std::this_thread::sleep_for(50ms);  // most often, shutdown reaches its drain meanwhile
            throw std::runtime_error("fails during the drain");
        },
        o);
    self = &pool;
    REQUIRE(pool.try_submit(item{1, {}}, job_options{.key = 7}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{2, {}}, job_options{.key = 7}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    hold.release();
    const auto t0 = clock_type::now();
    const auto report = pool.shutdown(4s);
    const auto took = clock_type::now() - t0;
    CHECK(report.unprocessed.size() == 2u);  // 1 (its retry) and 2, in key order
    CHECK(took < 2s);                        // nothing can run: it should not wait out the grace
    CHECK(events.count(event_kind::shutdown_grace_over) == 0u);
}

TEST_CASE("a keyed retry that waits for its key's token keeps retry_pending right",
          "[scheduler][unit]") {
    std::atomic<int> calls{0};
    auto o = opts(2);
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = 1ms;
    o.retry.jitter = workerpool::jitter_mode::none;
    o.key_rate_limit = {5.0, 1};  // a token per 200 ms
    dispatcher<item> pool(
        [&](item&) {
            if (calls.fetch_add(1) == 0) {
                throw std::runtime_error("once");
            }
        },
        o);
    REQUIRE(pool.try_submit(item{1, {}}, job_options{.key = 3}) == submit_status::accepted);
    REQUIRE(eventually([&] { return calls.load() == 2; }, 30s));
    REQUIRE(pool.wait_idle_for(30s));
    const auto s = pool.stats();
    CHECK(s.retry_pending == 0u);
    CHECK(s.scheduled == 0u);
}

TEST_CASE("scheduler: a take that finds nothing ready counts no throttling", "[scheduler][unit]") {
    using envelope = workerpool::detail::envelope<int>;
    workerpool::detail::schedule_settings st;
    st.lane_capacity = 10;
    st.pool_rate = workerpool::detail::token_rate::of(workerpool::rate_limit_settings{1.0, 1});
    workerpool::detail::scheduler<envelope> s(st);
    const std::int64_t now = 1'000'000'000;
    REQUIRE(s.submit({0, 0, 0}, now, 1, workerpool::detail::request_settings{}, std::int64_t{0},
                     nullptr)
                .ready);
    std::optional<envelope> out;
    workerpool::detail::scheduled_turn turn;
    REQUIRE(s.take(now, out, turn).got);
    out.reset();
    const auto t = s.take(now, out, turn);  // a second worker that saw the ready bit too
    CHECK_FALSE(t.got);
    CHECK_FALSE(t.pool_throttled);
    CHECK(s.throttled() == 0u);
}

TEST_CASE("with min_workers == 0 a not_before request starts when due, not at the next "
          "scaling tick",
          "[scheduler][unit]") {
    std::atomic<bool> started{false};
    std::atomic<std::int64_t> late_ms{-1};
    auto o = opts(1);
    o.min_workers = 0;
    o.scale_interval = std::chrono::milliseconds(3000);
    dispatcher<item> pool(
        [&](item& it) {
            late_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() -
                                                                            it.not_before)
                          .count();
            started = true;
        },
        o);
    const auto when = clock_type::now() + 200ms;
    REQUIRE(pool.try_submit(item{1, when}, job_options{.not_before = when}) ==
            submit_status::accepted);
    REQUIRE(eventually([&] { return started.load(); }, 30s));
    INFO("started " << late_ms.load() << " ms after its not_before");
    CHECK(late_ms.load() < 1000);  // generous: the scaling tick is 3 s away
    (void)pool.shutdown(1s);
}
