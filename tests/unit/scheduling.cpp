// The scheduler (issue 20): order and mutual exclusion per key under many producers, different
// keys in parallel, a busy key holding no worker, a key's retries holding its place, round-robin
// fairness between keys, priority lanes with a bound of their own, aging, pool and per-key rate
// limits, not_before never early, pause/resume, retry_after, the scaler not growing for waiting
// requests, shutdown handing back each key's requests in order, and the accounting identity
// under a mix of all of it. Handlers only record (into atomics or locked logs); assertions run on
// the test thread. Sleeps appear only where time is the behaviour (a rate, a pause that must
// hold, a stream of work).

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/event_log.hpp"
#include "support/failure_log.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::event_kind;
using workerpool::job_options;
using workerpool::submit_status;
using workerpool::test::event_log;
using workerpool::test::eventually;
using workerpool::test::failure_log;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::holds;
using workerpool::test::stopped_by_token;
using workerpool::test::submitter;
using workerpool::test::this_tid;
using workerpool::test::under_tsan;

// What these tests submit: the handler cannot see the job_options, so the request carries what
// the handler checks (its key, its sequence number within the key, when it may start).
struct item {
    int id = 0;
    std::uint64_t key = 0;
    std::uint64_t seq = 0;
    clock_type::time_point not_before{};
};

// A pool of exactly `workers` workers whose destructor does not wait out a grace.
workerpool::options<item> sched_options(std::size_t capacity, std::size_t workers) {
    workerpool::options<item> o;
    o.capacity = capacity;
    o.min_workers = workers;
    o.max_workers = workers;
    o.destructor_grace = 0ns;
    return o;
}

// Start (and end) times of attempts, per request id, recorded by handlers.
class time_log {
public:
    struct entry {
        int id;
        clock_type::time_point start;
        clock_type::time_point end;
    };
    void add(int id, clock_type::time_point start) {
        const auto end = clock_type::now();
        std::lock_guard lock(mutex_);
        entries_.push_back({id, start, end});
    }
    std::vector<entry> all() {
        std::lock_guard lock(mutex_);
        return entries_;
    }
    std::vector<entry> of(int id) {
        std::vector<entry> out;
        for (const entry& e : all()) {
            if (e.id == id) {
                out.push_back(e);
            }
        }
        return out;
    }
    std::size_t size() {
        std::lock_guard lock(mutex_);
        return entries_.size();
    }

private:
    std::mutex mutex_;
    std::vector<entry> entries_;  // guarded by mutex_
};

// Records the ids handlers saw, in the order they started.
using order_log = workerpool::test::recorder;

std::vector<int> ids_of(const std::vector<item>& items) {
    std::vector<int> ids;
    ids.reserve(items.size());
    for (const item& it : items) {
        ids.push_back(it.id);
    }
    return ids;
}

// The ids of `items` whose key is `key`, in their order.
std::vector<int> ids_of_key(const std::vector<item>& items, std::uint64_t key) {
    std::vector<int> ids;
    for (const item& it : items) {
        if (it.key == key) {
            ids.push_back(it.id);
        }
    }
    return ids;
}

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

// Starts per second between the first and the last of `starts` (so the initial burst, which
// starts at once, does not count): (n - 1) intervals over that window. Pre: n >= 2.
// Starts per second after the first `burst` (which may all start at once).
double measured_rate(std::vector<clock_type::time_point> starts, std::size_t burst = 1) {
    std::sort(starts.begin(), starts.end());
    const std::size_t from = burst - 1;
    return static_cast<double>(starts.size() - 1 - from) /
           seconds_between(starts[from], starts.back());
}

// The rate tests' burst: a few tokens of slack, so that a worker or supervisor woken late on a
// loaded machine (sanitizers, parallel tests) catches up instead of losing that time for good,
// as a bucket of one token must.
constexpr std::size_t rate_burst = 10;

// Busy-waits `d` on the calling thread: a handler whose work takes time (time is the behaviour).
void work_for(std::chrono::nanoseconds d) {
    const auto until = clock_type::now() + d;
    while (clock_type::now() < until) {
        std::this_thread::yield();
    }
}

}  // namespace

TEST_CASE("requests of one key run one at a time in submit order under 16 producers",
          "[scheduler][key][unit]") {
    constexpr std::size_t keys = 64;
    constexpr int producers = 16;
    const int per_producer = under_tsan ? 100 : 500;
    const int total = producers * per_producer;

    struct key_state {
        std::mutex submit_mutex;             // makes "take a sequence number, submit" atomic
        std::uint64_t next_seq = 0;          // guarded by submit_mutex
        std::atomic<std::uint64_t> last{0};  // the last sequence number a handler saw
        std::atomic<bool> running{false};    // a handler of this key is inside
    };
    std::array<key_state, keys> states;
    std::atomic<int> overlaps{0};
    std::atomic<int> out_of_order{0};
    std::atomic<int> done{0};
    std::atomic<int> refused{0};

    dispatcher<item> pool(
        [&](item& it) {
            key_state& ks = states.at(static_cast<std::size_t>(it.key - 1));
            if (ks.running.exchange(true)) {
                overlaps.fetch_add(1);
            }
            if (it.seq != ks.last.load() + 1) {
                out_of_order.fetch_add(1);
            }
            std::this_thread::yield();  // widens the window in which an overlap would show
            ks.last.store(it.seq);
            ks.running.store(false);
            done.fetch_add(1);
        },
        sched_options(256, 4));
    finally stop([&] { (void)pool.shutdown(0s); });

    std::vector<std::jthread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            std::mt19937 rng(static_cast<unsigned>(p) + 1);
            for (int i = 0; i < per_producer; ++i) {
                const std::size_t k = rng() % keys;
                key_state& ks = states.at(k);
                std::lock_guard lock(ks.submit_mutex);
                const std::uint64_t seq = ++ks.next_seq;
                const std::uint64_t key = k + 1;  // 0 means "no key"
                if (pool.submit(item{p * per_producer + i, key, seq, {}},
                                job_options{.key = key}) != submit_status::accepted) {
                    refused.fetch_add(1);
                }
            }
        });
    }
    threads.clear();  // joins the producers

    REQUIRE(refused.load() == 0);
    REQUIRE(eventually([&] { return done.load() == total; }, 60s));
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(overlaps.load() == 0);
    CHECK(out_of_order.load() == 0);
    for (key_state& ks : states) {
        CHECK(ks.last.load() == ks.next_seq);  // every request of every key ran
    }
    const auto s = pool.stats();
    CHECK(s.submitted == static_cast<std::uint64_t>(total));
    CHECK(s.completed == static_cast<std::uint64_t>(total));
    CHECK(s.failed == 0u);
    CHECK(s.submitted == s.completed + s.failed);
    CHECK(s.scheduled == 0u);
}

TEST_CASE("requests of different keys run in parallel", "[scheduler][key][unit]") {
    std::atomic<int> arrived{0};
    std::atomic<int> met{0};  // handlers that saw the other one inside too
    std::atomic<int> finished{0};
    dispatcher<item> pool(
        [&](item&) {
            arrived.fetch_add(1);
            if (eventually([&] { return arrived.load() >= 2; }, 10s)) {
                met.fetch_add(1);
            }
            finished.fetch_add(1);
        },
        sched_options(16, 2));
    REQUIRE(pool.try_submit(item{1, 1, 1, {}}, job_options{.key = 1}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{2, 2, 1, {}}, job_options{.key = 2}) == submit_status::accepted);
    REQUIRE(eventually([&] { return finished.load() == 2; }, 30s));
    (void)pool.shutdown(10s);
    CHECK(met.load() == 2);
}

TEST_CASE("a key waiting for its busy predecessor holds no worker: other keys run meanwhile",
          "[scheduler][key][unit]") {
    gate hold;
    order_log seen;
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.id == 0 && !hold.wait(st)) {
                throw stopped_by_token{};
            }
            seen.add(it.id);
        },
        sched_options(64, 2));
    finally release([&] { hold.open(); });
    // Key 1: request 0 holds a worker; 1..9 wait for it. Then keys 2..6, one request each.
    for (int i = 0; i < 10; ++i) {
        REQUIRE(pool.try_submit(item{i, 1, 0, {}}, job_options{.key = 1}) ==
                submit_status::accepted);
    }
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    for (int i = 10; i < 15; ++i) {
        const auto key = static_cast<std::uint64_t>(i - 8);
        REQUIRE(pool.try_submit(item{i, key, 0, {}}, job_options{.key = key}) ==
                submit_status::accepted);
    }
    // The one free worker serves keys 2..6 while key 1 is still held.
    REQUIRE(eventually([&] { return seen.size() == 5; }));
    CHECK(hold.waiting() == 1);
    auto others = seen.ids();
    std::sort(others.begin(), others.end());
    CHECK(others == std::vector<int>{10, 11, 12, 13, 14});
    CHECK(pool.stats().scheduled == 9u);  // key 1's 1..9
    hold.open();
    REQUIRE(eventually([&] { return seen.size() == 15; }));
    const auto ids = seen.ids();
    CHECK(std::vector<int>(ids.begin() + 5, ids.end()) ==
          std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    (void)pool.shutdown(10s);
}

TEST_CASE("a key's next request waits until the one before has ended, retries and backoff "
          "included",
          "[scheduler][key][retry][unit]") {
    const bool succeeds_on_retry = GENERATE(true, false);
    INFO("request 1 " << (succeeds_on_retry ? "succeeds on its retry" : "fails every attempt"));
    time_log attempts;
    failure_log<item> failures;
    std::atomic<int> first_calls{0};
    auto o = sched_options(16, 2);  // a second worker is free during the backoff
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = 50ms;
    o.retry.jitter = workerpool::jitter_mode::none;
    o.on_failure = failures.sink();
    dispatcher<item> pool(
        [&](item& it) {
            const auto start = clock_type::now();
            if (it.id == 1 && (first_calls.fetch_add(1) == 0 || !succeeds_on_retry)) {
                attempts.add(it.id, start);
                throw std::runtime_error("transient");
            }
            attempts.add(it.id, start);
        },
        o);
    REQUIRE(pool.try_submit(item{1, 7, 1, {}}, job_options{.key = 7}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{2, 7, 2, {}}, job_options{.key = 7}) == submit_status::accepted);
    REQUIRE(eventually([&] { return attempts.size() == 3; }));
    REQUIRE(pool.wait_idle_for(30s));
    (void)pool.shutdown(10s);

    const auto one = attempts.of(1);
    const auto two = attempts.of(2);
    REQUIRE(one.size() == 2u);
    REQUIRE(two.size() == 1u);
    CHECK(one[1].start - one[0].end >= 50ms);  // the backoff was waited out
    CHECK(two[0].start >= one[1].end);         // and request 2 waited for all of it
    CHECK(failures.size() == (succeeds_on_retry ? 0u : 1u));
    const auto s = pool.stats();
    CHECK(s.retried == 1u);
    CHECK(s.submitted == s.completed + s.failed);
}

TEST_CASE("a key with 10,000 queued requests does not starve a key with one",
          "[scheduler][key][fairness][unit]") {
    constexpr int backlog = 10'000;
    gate hold;
    std::atomic<int> a_done{0};
    std::atomic<int> a_done_when_b_started{-1};
    std::atomic<bool> b_done{false};
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.key == 2) {
                a_done_when_b_started.store(a_done.load());
                b_done.store(true);
                return;
            }
            if (it.id == 0 && !hold.wait(st)) {
                throw stopped_by_token{};
            }
            a_done.fetch_add(1);
        },
        sched_options(16'384, 1));
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(item{0, 1, 0, {}}, job_options{.key = 1}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));  // the one worker is inside A's first
    for (int i = 1; i < backlog; ++i) {
        REQUIRE(pool.try_submit(item{i, 1, 0, {}}, job_options{.key = 1}) ==
                submit_status::accepted);
    }
    REQUIRE(pool.try_submit(item{backlog, 2, 0, {}}, job_options{.key = 2}) ==
            submit_status::accepted);
    hold.open();
    REQUIRE(eventually([&] { return b_done.load(); }, 30s));
    REQUIRE(eventually([&] { return a_done.load() == backlog; }, 60s));
    (void)pool.shutdown(10s);
    INFO("A's requests completed before B started: " << a_done_when_b_started.load());
    CHECK(a_done_when_b_started.load() >= 0);
    CHECK(a_done_when_b_started.load() <= 64);
}

TEST_CASE("a full low lane refuses only its own lane: a high-priority request is accepted and runs "
          "first",
          "[scheduler][priority][unit]") {
    constexpr std::size_t capacity = 4;
    gate hold;
    order_log seen;
    auto o = sched_options(capacity, 1);
    o.priority_lanes = 2;
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.id == 100 && !hold.wait(st)) {
                throw stopped_by_token{};
            }
            seen.add(it.id);
        },
        o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(item{100, 0, 0, {}}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));  // the one worker is busy

    int low = 0;
    while (low < 64 && pool.try_submit(item{low, 0, 0, {}}, job_options{.priority = 0}) ==
                           submit_status::accepted) {
        ++low;
    }
    CHECK(low == static_cast<int>(capacity));  // lane 0 holds `capacity` requests of its own
    CHECK(pool.try_submit(item{99, 0, 0, {}}, job_options{.priority = 0}) == submit_status::full);
    CHECK(pool.try_submit(item{200, 0, 0, {}}, job_options{.priority = 1}) ==
          submit_status::accepted);
    CHECK(pool.stats().scheduled == capacity + 1);

    hold.open();
    const auto expected = static_cast<std::size_t>(low) + 2;
    REQUIRE(eventually([&] { return seen.size() == expected; }));
    (void)pool.shutdown(10s);
    std::vector<int> order{100, 200};
    for (int i = 0; i < low; ++i) {
        order.push_back(i);  // the low lane afterwards, oldest first
    }
    CHECK(seen.ids() == order);
}

TEST_CASE("a blocking submit into a full lane waits for room in that lane",
          "[scheduler][priority][unit]") {
    gate hold;
    std::atomic<int> done{0};
    auto o = sched_options(2, 1);
    o.priority_lanes = 2;
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.id == 100 && !hold.wait(st)) {
                throw stopped_by_token{};
            }
            done.fetch_add(1);
        },
        o);
    finally release([&] { hold.open(); });
    REQUIRE(pool.try_submit(item{100, 0, 0, {}}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    REQUIRE(pool.try_submit(item{1, 0, 0, {}}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{2, 0, 0, {}}) == submit_status::accepted);
    CHECK(pool.submit_for(item{3, 0, 0, {}}, 20ms) == submit_status::full);

    submitter blocked;
    std::jthread producer([&] {
        blocked.tid.store(this_tid());
        blocked.result.store(pool.submit(item{3, 0, 0, {}}));
        blocked.done.store(true);
    });
    // It cannot get in until the worker takes one from the lane, which needs the gate open.
    REQUIRE(blocked.blocked());
    hold.open();
    REQUIRE(eventually([&] { return blocked.done.load(); }));
    CHECK(blocked.result.load() == submit_status::accepted);
    REQUIRE(eventually([&] { return done.load() == 4; }));
    (void)pool.shutdown(10s);
}

TEST_CASE("aging: a low-priority request runs despite a continuous stream of high-priority ones, "
          "after the high ones older than it",
          "[scheduler][priority][aging][unit]") {
    constexpr int low_id = 1'000'000;
    constexpr int submitted_before_low = 50;
    order_log seen;
    std::atomic<bool> low_ran{false};
    auto o = sched_options(16, 1);
    o.priority_lanes = 2;
    o.priority_aging = 20ms;
    dispatcher<item> pool(
        [&](item& it) {
            seen.add(it.id);
            if (it.id == low_id) {
                low_ran.store(true);
                return;
            }
            work_for(200us);  // a stream of real work: lane 1 never empties
        },
        o);
    std::atomic<bool> stop{false};
    std::atomic<int> refused{0};
    std::jthread producer([&] {
        for (int n = 0; !stop.load(); ++n) {
            if (n == submitted_before_low &&
                pool.submit(item{low_id, 0, 0, {}}, job_options{.priority = 0}) !=
                    submit_status::accepted) {
                refused.fetch_add(1);
            }
            if (pool.submit(item{n, 0, 0, {}}, job_options{.priority = 1}) !=
                submit_status::accepted) {
                if (!stop.load()) {
                    refused.fetch_add(1);
                }
                return;
            }
        }
    });
    const bool ran = eventually([&] { return low_ran.load(); }, 20s);
    stop.store(true);
    (void)pool.shutdown(0s);  // wakes the producer if it is blocked in submit
    producer.join();
    REQUIRE(ran);
    CHECK(refused.load() == 0);
    const auto ids = seen.ids();
    const auto low_at = std::find(ids.begin(), ids.end(), low_id);
    REQUIRE(low_at != ids.end());
    // Every high-priority request submitted before the low one is older: it ran first.
    std::vector<int> older(ids.begin(), low_at);
    std::sort(older.begin(), older.end());
    for (int n = 0; n < submitted_before_low; ++n) {
        INFO("high-priority request " << n);
        CHECK(std::binary_search(older.begin(), older.end(), n));
    }
}

TEST_CASE("the pool's rate limit holds starts to its rate (within 10 % over 2 s) and counts the "
          "waits",
          "[scheduler][rate][unit]") {
    constexpr double rate = 200.0;
    constexpr int requests = 460;  // 2.25 s at 200/s, after the burst
    time_log starts;
    event_log events;
    auto o = sched_options(1024, 2);
    o.rate_limit = {rate, rate_burst};
    o.on_event = events.sink();
    dispatcher<item> pool([&](item& it) { starts.add(it.id, clock_type::now()); }, o);
    for (int i = 0; i < requests; ++i) {
        REQUIRE(pool.try_submit(item{i, 0, 0, {}}) == submit_status::accepted);
    }
    REQUIRE(eventually([&] { return starts.size() == static_cast<std::size_t>(requests); }, 30s));
    (void)pool.shutdown(10s);

    std::vector<clock_type::time_point> times;
    for (const auto& e : starts.all()) {
        times.push_back(e.start);
    }
    const double measured = measured_rate(times, rate_burst);
    INFO("measured " << measured << " starts/s, limit " << rate);
    CHECK(measured >= rate * 0.9);
    CHECK(measured <= rate * 1.1);
    const auto s = pool.stats();
    CHECK(s.throttled > 0u);
    CHECK(events.count(event_kind::throttled) > 0u);
    CHECK(s.submitted == s.completed);
}

TEST_CASE(
    "a per-key rate limit holds each key to its rate (within 10 % over 2 s) and other keys and "
    "unkeyed requests are unaffected",
    "[scheduler][rate][key][unit]") {
    constexpr double rate = 100.0;
    constexpr int per_key = 220;  // 2.1 s at 100/s, after the burst
    std::mutex mutex;
    std::map<std::uint64_t, std::vector<clock_type::time_point>> starts;  // guarded by mutex
    std::atomic<int> keyed_done{0};
    event_log events;
    auto o = sched_options(1024, 2);
    o.key_rate_limit = {rate, rate_burst};
    o.on_event = events.sink();
    dispatcher<item> pool(
        [&](item& it) {
            const auto now = clock_type::now();
            {
                std::lock_guard lock(mutex);
                starts[it.key].push_back(now);
            }
            if (it.key != 0) {
                keyed_done.fetch_add(1);
            }
        },
        o);
    for (int i = 0; i < per_key; ++i) {
        REQUIRE(pool.try_submit(item{i, 1, 0, {}}, job_options{.key = 1}) ==
                submit_status::accepted);
        REQUIRE(pool.try_submit(item{i, 2, 0, {}}, job_options{.key = 2}) ==
                submit_status::accepted);
    }
    // Unkeyed traffic at about 1000/s for as long as the keyed requests take (the sleep is the
    // traffic's rate, not a synchronisation).
    int refused = 0;
    const auto give_up = clock_type::now() + 30s;
    while (keyed_done.load() < 2 * per_key && clock_type::now() < give_up) {
        if (pool.try_submit(item{-1, 0, 0, {}}) != submit_status::accepted) {
            ++refused;
        }
        std::this_thread::sleep_for(1ms);
    }
    REQUIRE(keyed_done.load() == 2 * per_key);
    REQUIRE(pool.wait_idle_for(30s));
    (void)pool.shutdown(10s);

    std::lock_guard lock(mutex);
    const auto& k1 = starts[1];
    const auto& k2 = starts[2];
    REQUIRE(k1.size() == static_cast<std::size_t>(per_key));
    REQUIRE(k2.size() == static_cast<std::size_t>(per_key));
    const double rate1 = measured_rate(k1, rate_burst);
    const double rate2 = measured_rate(k2, rate_burst);
    INFO("key 1: " << rate1 << "/s, key 2: " << rate2 << "/s, limit " << rate << "/s per key");
    CHECK(rate1 >= rate * 0.9);
    CHECK(rate1 <= rate * 1.1);
    CHECK(rate2 >= rate * 0.9);  // a bucket per key: not one shared by both
    CHECK(rate2 <= rate * 1.1);
    // Unkeyed requests during key 1's window: far more than key 1's limit would let through.
    const auto bounds = std::minmax_element(k1.begin(), k1.end());
    const clock_type::time_point from = *bounds.first;
    const clock_type::time_point to = *bounds.second;
    const auto unkeyed_in_window =
        std::count_if(starts[0].begin(), starts[0].end(),
                      [from, to](clock_type::time_point t) { return t >= from && t <= to; });
    const double window = seconds_between(from, to);
    INFO("unkeyed starts in key 1's window of " << window << " s: " << unkeyed_in_window);
    CHECK(static_cast<double>(unkeyed_in_window) > 3 * rate * window);
    CHECK(refused == 0);
    const auto s = pool.stats();
    CHECK(s.throttled > 0u);
    CHECK(events.count(event_kind::throttled) > 0u);
}

TEST_CASE("not_before: a request never starts earlier, and counts as scheduled while it waits",
          "[scheduler][not_before][unit]") {
    constexpr int requests = 30;
    std::atomic<int> started{0};
    std::atomic<int> early{0};
    time_log starts;
    dispatcher<item> pool(
        [&](item& it) {
            const auto now = clock_type::now();
            if (now < it.not_before) {
                early.fetch_add(1);
            }
            starts.add(it.id, now);
            started.fetch_add(1);
        },
        sched_options(64, 2));
    const auto base = clock_type::now();
    for (int i = 0; i < requests; ++i) {
        const auto when = base + 50ms + std::chrono::milliseconds((i * 37) % 150);
        REQUIRE(pool.try_submit(item{i, 0, 0, when}, job_options{.not_before = when}) ==
                submit_status::accepted);
    }
    const auto s = pool.stats();
    // Exact unless the machine stalled past the first not_before: those started already.
    CHECK(s.scheduled + static_cast<std::size_t>(started.load()) >=
          static_cast<std::size_t>(requests));
    CHECK(s.scheduled <= static_cast<std::size_t>(requests));
    REQUIRE(eventually([&] { return started.load() == requests; }, 30s));
    REQUIRE(pool.wait_idle_for(30s));
    CHECK(early.load() == 0);
    CHECK(pool.stats().scheduled == 0u);

    // A past not_before is no wait at all; a key's later request waits behind a timed one.
    const auto k1_when = clock_type::now() + 100ms;
    REQUIRE(
        pool.try_submit(item{100, 5, 0, k1_when}, job_options{.key = 5, .not_before = k1_when}) ==
        submit_status::accepted);
    REQUIRE(pool.try_submit(item{101, 5, 0, {}}, job_options{.key = 5}) == submit_status::accepted);
    const auto past = clock_type::now() - 1s;
    REQUIRE(pool.try_submit(item{102, 0, 0, past}, job_options{.not_before = past}) ==
            submit_status::accepted);
    REQUIRE(eventually([&] { return started.load() == requests + 3; }, 30s));
    (void)pool.shutdown(10s);
    CHECK(early.load() == 0);
    const auto k1 = starts.of(100);
    const auto k2 = starts.of(101);
    REQUIRE(k1.size() == 1u);
    REQUIRE(k2.size() == 1u);
    CHECK(k2[0].start >= k1[0].end);
    CHECK(k2[0].start >= k1_when);
}

TEST_CASE(
    "while paused nothing starts, submits are accepted up to capacity and resume runs them all",
    "[scheduler][pause][unit]") {
    constexpr std::size_t capacity = 8;
    constexpr std::size_t workers = 2;
    std::atomic<int> started{0};
    event_log events;
    auto o = sched_options(capacity, workers);
    o.on_event = events.sink();
    dispatcher<item> pool([&](item&) { started.fetch_add(1); }, o);
    CHECK_FALSE(pool.paused());
    pool.pause();
    CHECK(pool.paused());

    // Plain requests (the ring) and keyed ones (the scheduler) alike.
    std::size_t plain = 0;
    while (plain < 64 &&
           pool.try_submit(item{static_cast<int>(plain), 0, 0, {}}) == submit_status::accepted) {
        ++plain;
    }
    INFO("plain requests accepted while paused: " << plain);
    CHECK(plain >= capacity);
    CHECK(plain <= capacity + workers);  // at most one taken (not started) per worker
    for (int i = 0; i < 4; ++i) {
        REQUIRE(pool.try_submit(item{100 + i, 3, 0, {}}, job_options{.key = 3}) ==
                submit_status::accepted);
    }
    std::this_thread::sleep_for(100ms);  // the pause must hold for a while: time is the behaviour
    CHECK(started.load() == 0);
    CHECK(pool.paused());

    pool.resume();
    CHECK_FALSE(pool.paused());
    const auto total = static_cast<int>(plain) + 4;
    REQUIRE(eventually([&] { return started.load() == total; }));
    (void)pool.shutdown(10s);
    CHECK(events.count(event_kind::paused) == 1u);
    CHECK(events.count(event_kind::resumed) == 1u);
    CHECK(events.kinds({event_kind::paused, event_kind::resumed}) ==
          std::vector<event_kind>{event_kind::paused, event_kind::resumed});
    CHECK(std::string(workerpool::to_string(event_kind::paused)) == "paused");
    CHECK(std::string(workerpool::to_string(event_kind::resumed)) == "resumed");
    CHECK(std::string(workerpool::to_string(event_kind::throttled)) == "throttled");
}

TEST_CASE("shutdown while paused hands back everything queued at once, without waiting the grace",
          "[scheduler][pause][shutdown][unit]") {
    std::atomic<int> started{0};
    auto o = sched_options(64, 2);
    o.priority_lanes = 2;
    dispatcher<item> pool([&](item&) { started.fetch_add(1); }, o);
    pool.pause();
    int submitted = 0;
    for (int i = 0; i < 12; ++i) {
        job_options jo;
        jo.key = static_cast<std::uint64_t>(i % 3);  // 0: none
        jo.priority = static_cast<unsigned>(i % 2);
        REQUIRE(pool.try_submit(item{i, jo.key, 0, {}}, jo) == submit_status::accepted);
        ++submitted;
    }
    const auto start = clock_type::now();
    const auto report = pool.shutdown(30s);
    const auto took = clock_type::now() - start;
    CHECK(took < 10s);
    CHECK(started.load() == 0);
    CHECK(report.unprocessed.size() == static_cast<std::size_t>(submitted));
    for (const std::uint64_t key : {1u, 2u}) {
        const auto ids = ids_of_key(report.unprocessed, key);
        CHECK(std::is_sorted(ids.begin(), ids.end()));
    }
    const auto s = pool.stats();
    CHECK(s.submitted == s.completed + s.failed + report.unprocessed.size());
}

TEST_CASE("shutdown hands back each key's waiting requests in submit order",
          "[scheduler][key][shutdown][unit]") {
    constexpr int per_key = 8;
    gate hold;
    failure_log<item> failures;
    auto o = sched_options(64, 3);  // a third worker is free: the keys, not the workers, hold
    o.on_failure = failures.sink();
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            if (it.seq == 1 && !hold.wait(st)) {  // each key's first request
                throw stopped_by_token{};
            }
        },
        o);
    finally release([&] { hold.open(); });
    // Keys 1 and 2 interleaved: ids 1xx are key 1's, 2xx key 2's.
    for (int n = 1; n <= per_key; ++n) {
        for (const std::uint64_t key : {1u, 2u}) {
            const int id = static_cast<int>(key) * 100 + n;
            REQUIRE(pool.try_submit(item{id, key, static_cast<std::uint64_t>(n), {}},
                                    job_options{.key = key}) == submit_status::accepted);
        }
    }
    REQUIRE(eventually([&] { return hold.waiting() == 2; }));  // both keys' first requests
    CHECK(pool.stats().scheduled == 2u * (per_key - 1));
    // The grace ends with both first requests still held; their tokens stop them.
    const auto report = pool.shutdown(50ms);
    CHECK_FALSE(report.drained);
    std::vector<int> want1;
    std::vector<int> want2;
    for (int n = 2; n <= per_key; ++n) {
        want1.push_back(100 + n);
        want2.push_back(200 + n);
    }
    CHECK(ids_of_key(report.unprocessed, 1) == want1);
    CHECK(ids_of_key(report.unprocessed, 2) == want2);
    CHECK(report.unprocessed.size() == 2u * (per_key - 1));
    REQUIRE(failures.size() == 2u);  // the two held ones, cancelled
    for (const auto& f : failures.items) {
        CHECK(f.reason == workerpool::failure_reason::cancelled);
    }
    const auto s = pool.stats();
    CHECK(s.submitted == s.completed + s.failed + report.unprocessed.size());
}

TEST_CASE("shutdown hands back requests waiting for a not_before at once, with their key's later "
          "requests behind them",
          "[scheduler][not_before][shutdown][unit]") {
    std::atomic<int> started{0};
    dispatcher<item> pool([&](item&) { started.fetch_add(1); }, sched_options(64, 1));
    const auto later = clock_type::now() + 1h;
    REQUIRE(pool.try_submit(item{1, 4, 0, later}, job_options{.key = 4, .not_before = later}) ==
            submit_status::accepted);
    REQUIRE(pool.try_submit(item{2, 4, 0, {}}, job_options{.key = 4}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{3, 4, 0, {}}, job_options{.key = 4}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{4, 0, 0, later}, job_options{.not_before = later}) ==
            submit_status::accepted);
    CHECK(pool.stats().scheduled == 4u);
    const auto start = clock_type::now();
    const auto report = pool.shutdown(30s);
    CHECK(clock_type::now() - start < 10s);
    CHECK(started.load() == 0);
    CHECK(ids_of_key(report.unprocessed, 4) == std::vector<int>{1, 2, 3});
    auto ids = ids_of(report.unprocessed);
    std::sort(ids.begin(), ids.end());
    CHECK(ids == std::vector<int>{1, 2, 3, 4});
    const auto s = pool.stats();
    CHECK(s.submitted == s.completed + s.failed + report.unprocessed.size());
}

TEST_CASE("requests waiting for a time or a rate-limit token are not backlog the scaler grows for",
          "[scheduler][scaling][unit]") {
    std::atomic<int> started{0};
    auto o = sched_options(256, 1);
    o.max_workers = 4;
    o.scale_up_depth = 1;
    o.scale_interval = 10ms;
    SECTION("not_before") {}
    SECTION("rate limit") {
        o.rate_limit = {2.0, 1};
    }
    const bool timed = o.rate_limit.per_second == 0.0;
    dispatcher<item> pool([&](item&) { started.fetch_add(1); }, o);
    const auto later = clock_type::now() + 1h;
    for (int i = 0; i < 50; ++i) {
        job_options jo;
        if (timed) {
            jo.not_before = later;
        }
        REQUIRE(pool.try_submit(item{i, 0, 0, {}}, jo) == submit_status::accepted);
    }
    // Twenty scaler ticks pass (time is the behaviour: the scaler must not act on them).
    std::this_thread::sleep_for(200ms);
    const auto s = pool.stats();
    CHECK(s.scale_ups == 0u);
    CHECK(pool.worker_count() == 1u);
    CHECK(started.load() <= 2);  // one burst token, and perhaps the next
    const auto report = pool.shutdown(0s);
    const auto after = pool.stats();
    CHECK(after.submitted == after.completed + after.failed + report.unprocessed.size());
}

TEST_CASE("a bulk submit with a key keeps the key's order", "[scheduler][key][bulk][unit]") {
    constexpr int count = 200;
    std::atomic<bool> running{false};
    std::atomic<int> overlaps{0};
    std::atomic<int> out_of_order{0};
    std::atomic<int> last{-1};
    std::atomic<int> done{0};
    dispatcher<item> pool(
        [&](item& it) {
            if (running.exchange(true)) {
                overlaps.fetch_add(1);
            }
            if (it.id != last.load() + 1) {
                out_of_order.fetch_add(1);
            }
            std::this_thread::yield();  // widens the window in which an overlap would show
            last.store(it.id);
            running.store(false);
            done.fetch_add(1);
        },
        sched_options(256, 4));
    std::vector<item> batch;
    for (int i = 0; i < count; ++i) {
        batch.push_back(item{i, 9, 0, {}});
    }
    REQUIRE(pool.try_submit_bulk(std::span<item>(batch), job_options{.key = 9}) == batch.size());
    REQUIRE(eventually([&] { return done.load() == count; }));
    (void)pool.shutdown(10s);
    CHECK(overlaps.load() == 0);
    CHECK(out_of_order.load() == 0);
    CHECK(last.load() == count - 1);
}

TEST_CASE("every request ends exactly once under a mix of keys, lanes, delays, failures and a "
          "shutdown half-way",
          "[scheduler][accounting][unit]") {
    // One by one, or in bulks of 1 to 8 requests that share their job_options (each bulk goes
    // to the scheduler in one pass of its lock).
    const bool bulk = GENERATE(false, true);
    INFO((bulk ? "submit_bulk" : "submit"));
    constexpr int producers = 4;
    const int per_producer = under_tsan ? 300 : 1500;
    const int total = producers * per_producer;
    std::vector<std::atomic<int>> ended(static_cast<std::size_t>(total));
    std::vector<std::atomic<bool>> accepted(static_cast<std::size_t>(total));
    std::atomic<int> started{0};
    std::atomic<int> bad_ids{0};

    auto o = sched_options(64, 3);
    o.priority_lanes = 3;
    o.priority_aging = 5ms;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = 1ms;
    auto mark = [&](int id) {
        if (id < 0 || id >= total) {
            bad_ids.fetch_add(1);
            return;
        }
        ended[static_cast<std::size_t>(id)].fetch_add(1);
    };
    o.on_success = [&](item& it) { mark(it.id); };
    o.on_failure = [&](workerpool::failure<item>&& f) { mark(f.request.id); };
    dispatcher<item> pool(
        [&](item& it, std::stop_token st) {
            started.fetch_add(1);
            if (it.id % 7 == 0) {
                throw std::runtime_error("fails every attempt");
            }
            if (it.id % 11 == 0 && !workerpool::test::wait_for_stop(st, 2ms)) {
                return;  // a slower one (cut short by shutdown)
            }
            if (st.stop_requested()) {
                throw stopped_by_token{};
            }
        },
        o);

    std::vector<std::jthread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            std::mt19937 rng(static_cast<unsigned>(p) + 7);
            std::vector<item> batch;
            for (int i = 0; i < per_producer;) {
                job_options jo;
                switch (rng() % 4) {
                case 0:
                    break;  // plain
                case 1:
                    jo.key = 1 + rng() % 8;
                    break;
                case 2:
                    jo.priority = static_cast<unsigned>(rng() % 3);
                    break;
                default:
                    jo.not_before = clock_type::now() + std::chrono::milliseconds(rng() % 30);
                    jo.key = rng() % 2 == 0 ? 0 : 1 + rng() % 8;
                    break;
                }
                const int run =
                    bulk ? std::min(1 + static_cast<int>(rng() % 8), per_producer - i) : 1;
                const int first = p * per_producer + i;
                batch.clear();
                for (int id = first; id < first + run; ++id) {
                    batch.push_back(item{id, jo.key, 0, jo.not_before});
                }
                const std::size_t took =
                    bulk ? pool.submit_bulk(std::span<item>(batch), jo)
                         : (pool.submit(std::move(batch.front()), jo) == submit_status::accepted
                                ? 1U
                                : 0U);
                for (std::size_t k = 0; k < took; ++k) {
                    accepted[static_cast<std::size_t>(first) + k].store(true);
                }
                if (took < batch.size()) {
                    return;  // closed: shutdown began
                }
                i += run;
            }
        });
    }
    REQUIRE(eventually([&] { return started.load() >= total / 4; }, 60s));
    const auto report = pool.shutdown(20ms);
    threads.clear();
    for (const item& it : report.unprocessed) {
        mark(it.id);
    }

    int accepted_count = 0;
    int not_ended = 0;
    int ended_twice = 0;
    int ended_unaccepted = 0;
    for (std::size_t i = 0; i < ended.size(); ++i) {
        const int n = ended[i].load();
        if (accepted[i].load()) {
            ++accepted_count;
            not_ended += n == 0 ? 1 : 0;
            ended_twice += n > 1 ? 1 : 0;
        } else {
            ended_unaccepted += n != 0 ? 1 : 0;
        }
    }
    INFO("accepted " << accepted_count << " of " << total << "; handed back "
                     << report.unprocessed.size());
    CHECK(bad_ids.load() == 0);
    CHECK(not_ended == 0);
    CHECK(ended_twice == 0);
    CHECK(ended_unaccepted == 0);
    const auto s = pool.stats();
    CHECK(s.submitted == static_cast<std::uint64_t>(accepted_count));
    CHECK(s.submitted == s.completed + s.failed + report.unprocessed.size());
    CHECK(s.scheduled == 0u);
}

TEST_CASE("a pool without workers starts one when a delayed request falls due, not at its next "
          "scaling tick",
          "[scheduler][not_before][unit]") {
    workerpool::options<int> o;
    o.min_workers = 0;
    o.max_workers = 2;
    o.scale_interval = std::chrono::milliseconds(60'000);  // no tick to come to the rescue
    std::atomic<int> ran{0};
    dispatcher<int> pool([&](int&) { ran.fetch_add(1); }, o);
    job_options jo;
    jo.not_before = clock_type::now() + 20ms;
    REQUIRE(pool.try_submit(1, jo) == submit_status::accepted);
    // Generous: the request is due in 20 ms; before the fix it waited for the 60 s tick.
    CHECK(eventually([&] { return ran.load() == 1; }, 10s));
}

// Defects a cold review of the scheduler found, each test failing before its fix (a keyed
// not_before lost behind its key, a keyed retry during the drain holding shutdown for its grace,
// retry_pending counted down twice, a throttle counted when nothing was ready; the pool without
// workers that waited for its scaling tick is the test above).

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
        sched_options(64, 2));
    REQUIRE(pool.try_submit(item{1, 0, 0, {}}, job_options{.key = 5}) == submit_status::accepted);
    REQUIRE(eventually([&] { return hold.waiting() == 1; }));
    const auto when = clock_type::now() + 2s;
    REQUIRE(pool.try_submit(item{2, 0, 0, when}, job_options{.key = 5, .not_before = when}) ==
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
    auto o = sched_options(64, 1);
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
            while (self.load()->try_submit(item{99, 0, 0, {}}) != submit_status::closed) {
                std::this_thread::yield();
            }
            std::this_thread::sleep_for(50ms);  // most often, shutdown reaches its drain meanwhile
            throw std::runtime_error("fails during the drain");
        },
        o);
    self = &pool;
    REQUIRE(pool.try_submit(item{1, 0, 0, {}}, job_options{.key = 7}) == submit_status::accepted);
    REQUIRE(pool.try_submit(item{2, 0, 0, {}}, job_options{.key = 7}) == submit_status::accepted);
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
    auto o = sched_options(64, 2);
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
    REQUIRE(pool.try_submit(item{1, 0, 0, {}}, job_options{.key = 3}) == submit_status::accepted);
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

// A worker that ends a keyed request takes the scheduler's next one in the same pass of its lock
// (finish_then_take). That shortcut must keep what the next round would have checked: the ring's
// turn, the pause, and the key's order.

TEST_CASE("one worker takes turns between the ring and the scheduler while both have work",
          "[scheduler][key][unit]") {
    constexpr int n = 40;
    order_log order;
    dispatcher<item> pool([&](item& it) { order.add(it.id); }, sched_options(256, 1));
    pool.pause();  // everything is queued before the worker looks
    // A worker that read the flags just before the pause may still pop one request: wait until
    // it sleeps.
    REQUIRE(eventually([&] { return pool.stats().idle == 1u; }));
    for (int i = 0; i < n; ++i) {
        REQUIRE(pool.try_submit(item{1000 + i, 1, 0, {}}, job_options{.key = 1}) ==
                submit_status::accepted);
        REQUIRE(pool.try_submit(item{i, 0, 0, {}}) == submit_status::accepted);
    }
    pool.resume();
    REQUIRE(eventually([&] { return order.size() == 2 * n; }));
    const std::vector<int> ids = order.ids();
    // Everything was queued before the worker looked, so it alternates strictly while both hold
    // requests: no two of a kind in a row until one side is empty.
    int plain_seen = 0;
    int keyed_seen = 0;
    int longest_plain = 0;
    int longest_keyed = 0;
    int run = 0;
    bool last_keyed = false;
    for (const int id : ids) {
        const bool keyed = id >= 1000;
        run = keyed == last_keyed ? run + 1 : 1;
        last_keyed = keyed;
        if (plain_seen < n && keyed_seen < n) {  // both still held requests before this one
            int& longest = keyed ? longest_keyed : longest_plain;
            longest = std::max(longest, run);
        }
        ++(keyed ? keyed_seen : plain_seen);
    }
    INFO("order: " << ::Catch::Detail::stringify(ids));
    CHECK(longest_keyed == 1);
    CHECK(longest_plain == 1);
    std::vector<int> keyed;
    for (const int id : ids) {
        if (id >= 1000) {
            keyed.push_back(id);
        }
    }
    std::vector<int> expected(n);
    std::iota(expected.begin(), expected.end(), 1000);
    CHECK(keyed == expected);  // the key's order holds
}

TEST_CASE("a pause made while a keyed request runs holds its key's next request",
          "[scheduler][key][pause][unit]") {
    std::atomic<int> started{0};
    dispatcher<item>* self = nullptr;
    dispatcher<item> pool(
        [&](item& it) {
            started.fetch_add(1);
            if (it.id == 1) {
                self->pause();  // the worker ends this request into a paused pool
            }
        },
        sched_options(16, 1));
    self = &pool;
    pool.pause();  // all three queued before the first starts: 2 waits behind 1 on key 5
    for (int i = 1; i <= 3; ++i) {
        REQUIRE(pool.try_submit(item{i, 5, 0, {}}, job_options{.key = 5}) ==
                submit_status::accepted);
    }
    pool.resume();
    REQUIRE(eventually([&] { return started.load() == 1 && pool.paused(); }));
    std::this_thread::sleep_for(100ms);  // the pause must hold for a while: time is the behaviour
    CHECK(started.load() == 1);
    pool.resume();
    REQUIRE(eventually([&] { return started.load() == 3; }));
}

TEST_CASE("after a keyed request whose key drained, the worker's turn between the ring and the "
          "scheduler is where its next round would have left it",
          "[scheduler][key][unit]") {
    // One worker, the ring empty: it takes A (key 1) from the scheduler, its turn now on the
    // ring's side. A queues three plain requests; when A ends nothing is ready in the scheduler,
    // so the worker pops 11, whose handler makes B (key 2) ready. With both holding work the
    // scheduler's turn comes next: B, then 12 and 13. (Moving the turn at A's end, when nothing
    // could be taken, gave 1, 11, 12, 2, 13.)
    order_log order;
    dispatcher<item>* self = nullptr;
    dispatcher<item> pool(
        [&](item& it) {
            order.add(it.id);
            if (it.id == 1) {
                for (int id = 11; id <= 13; ++id) {
                    (void)self->try_submit(item{id, 0, 0, {}});
                }
            } else if (it.id == 11) {
                (void)self->try_submit(item{2, 2, 0, {}}, job_options{.key = 2});
            }
        },
        sched_options(64, 1));
    self = &pool;
    REQUIRE(pool.try_submit(item{1, 1, 0, {}}, job_options{.key = 1}) == submit_status::accepted);
    REQUIRE(eventually([&] { return order.size() == 5; }));
    CHECK(order.ids() == std::vector<int>{1, 11, 2, 12, 13});
}
