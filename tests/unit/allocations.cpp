// Zero heap allocations per request on the hot path (issue 4 / DESIGN "Performance"): with a
// timeout set and a warmed-up pool, requests that complete normally allocate nothing.
//
// This file replaces the global operator new / delete (every form: plain, array, nothrow,
// aligned, sized) for the whole unit-test executable, through support/replaced_new.hpp's hooks.
// They forward to malloc/free and count only while a measuring window is open: outside it they
// cost one relaxed load (and the failure switches' loads).
//
// Debugging a failure: run with WORKERPOOL_ALLOC_TRAP=1 under gdb; every allocation counted
// inside a window raises SIGTRAP, so `bt` shows who allocates.

#include <workerpool/dispatcher.hpp>
#include <workerpool/request_group.hpp>

#include "support/catch.hpp"
#include "support/held_workers.hpp"
#include "support/replaced_new.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

// All relaxed: plain event counters; the window is opened and closed by the test thread, and the
// counts are read after the threads that allocate have been synchronised with (see measure()).
std::atomic<bool> counting{false};
std::atomic<std::uint64_t> allocations{0};
std::atomic<std::uint64_t> allocated_bytes{0};
std::atomic<std::uint64_t> deallocations{0};
std::array<std::atomic<std::uint64_t>, 40> by_size_class{};  // index: bit width of the size
bool trap_on_alloc = false;
// >= 0: the allocation after this many more on this thread fails (returns null, so operator new
// throws std::bad_alloc); -1: none fails.
thread_local int fail_after = -1;

// Non-zero: every allocation of at least this many bytes on this thread fails.
thread_local std::size_t fail_from_bytes = 0;

// Non-null: every allocation on this thread fails while the flag it points to is set (another
// thread can clear it, and so end the failures of a thread that does not return).
thread_local const std::atomic<bool>* fail_while = nullptr;

// Set: every allocation on every thread fails (the pool's own threads included).
std::atomic<bool> fail_everywhere{false};

bool injected_failure(std::size_t n) noexcept {
    if ((fail_while != nullptr && fail_while->load()) || fail_everywhere.load()) {
        return true;
    }
    if (fail_from_bytes != 0 && n >= fail_from_bytes) {
        return true;
    }
    if (fail_after == 0) {
        fail_after = -1;
        return true;
    }
    if (fail_after > 0) {
        --fail_after;
    }
    return false;
}

int bit_width(std::size_t n) noexcept {
    int w = 0;
    while (n != 0) {
        ++w;
        n >>= 1;
    }
    return w;
}

void note_alloc(std::size_t n) noexcept {
    if (counting.load(std::memory_order_relaxed)) {
        allocations.fetch_add(1, std::memory_order_relaxed);
        allocated_bytes.fetch_add(n, std::memory_order_relaxed);
        by_size_class[static_cast<std::size_t>(std::min(bit_width(n), 39))].fetch_add(
            1, std::memory_order_relaxed);
        if (trap_on_alloc) {
            std::raise(SIGTRAP);
        }
    }
}

void note_free(void* p) noexcept {
    if (p != nullptr && counting.load(std::memory_order_relaxed)) {
        deallocations.fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace

// The hooks of support/replaced_new.hpp: counted while a window is open, failed as the switches
// above say.
void* workerpool::test::allocate(std::size_t n) noexcept {
    if (injected_failure(n)) {
        return nullptr;
    }
    note_alloc(n);
    return std::malloc(n == 0 ? 1 : n);
}

void* workerpool::test::allocate_aligned(std::size_t n, std::align_val_t al) noexcept {
    if (injected_failure(n)) {
        return nullptr;
    }
    note_alloc(n);
    return aligned_malloc(n, al);
}

void workerpool::test::deallocate(void* p) noexcept {
    note_free(p);
    std::free(p);
}

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::job_options;
using workerpool::submit_status;

struct counts {
    std::uint64_t allocations = 0;
    std::uint64_t bytes = 0;
    std::uint64_t deallocations = 0;
    std::string by_size;  // "<=2^k bytes: n" for each size class seen
};

// Runs `body` with counting on. `body` must synchronise with every thread whose allocations it
// wants counted before it returns (join them, or observe their completion through an acquire).
template <class Body>
counts measure(Body&& body) {
    for (auto& c : by_size_class) {
        c.store(0, std::memory_order_relaxed);
    }
    allocations.store(0, std::memory_order_relaxed);
    allocated_bytes.store(0, std::memory_order_relaxed);
    deallocations.store(0, std::memory_order_relaxed);
    const char* trap = std::getenv("WORKERPOOL_ALLOC_TRAP");
    trap_on_alloc = trap != nullptr && trap[0] == '1';
    counting.store(true, std::memory_order_seq_cst);  // seq_cst: a fence-free "on" for every thread
    body();
    counting.store(false, std::memory_order_seq_cst);
    trap_on_alloc = false;
    counts c;
    c.allocations = allocations.load(std::memory_order_relaxed);
    c.bytes = allocated_bytes.load(std::memory_order_relaxed);
    c.deallocations = deallocations.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < by_size_class.size(); ++i) {
        if (const auto n = by_size_class[i].load(std::memory_order_relaxed); n != 0) {
            c.by_size += " <=" + std::to_string(i == 0 ? 0 : std::uint64_t{1} << i) +
                         "B:" + std::to_string(n);
        }
    }
    return c;
}

// Waits without allocating (no Catch macro, no std::function) until `done()` or 60 s.
template <class Pred>
bool wait_quietly(Pred done) {
    const auto end = std::chrono::steady_clock::now() + 60s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > end) {
            return false;
        }
        std::this_thread::sleep_for(100us);
    }
    return true;
}

struct payload {
    std::uint64_t id = 0;
    std::array<char, 48> bytes{};
};

workerpool::options<payload> alloc_options() {
    workerpool::options<payload> o;
    o.capacity = 512;
    o.min_workers = 2;
    o.max_workers = 2;  // no scaling in the window: starting a thread allocates, by design
    o.default_timeout = 10s;
    o.scale_interval = 5ms;  // many supervisor ticks inside the window
    return o;
}

}  // namespace

TEST_CASE("the counting allocator counts every form of operator new", "[alloc][unit]") {
    const counts c = measure([] {
        void* a = ::operator new(24);
        void* b = ::operator new[](40);
        void* d = ::operator new(8, std::nothrow);
        void* e = ::operator new (64, std::align_val_t{64});
        void* f = ::operator new[](128, std::align_val_t{128}, std::nothrow);
        ::operator delete(a);
        ::operator delete[](b);
        ::operator delete(d, std::nothrow);
        ::operator delete (e, std::align_val_t{64});
        ::operator delete[](f, std::align_val_t{128}, std::nothrow);
        std::vector<int> v(10);  // through std::allocator
        v.push_back(1);
    });
    CHECK(c.allocations == 7u);  // five direct calls, then the vector's block and its regrowth
    CHECK(c.deallocations == 7u);
    CHECK(c.bytes == 24u + 40u + 8u + 64u + 128u + 10 * sizeof(int) + 20 * sizeof(int));
}

TEST_CASE("requests that complete normally allocate nothing, with a timeout set",
          "[alloc][timeout][unit]") {
    const std::size_t shards = GENERATE(1u, 3u);  // one ring, or three (options.queue_shards)
    CAPTURE(shards);
    constexpr std::uint64_t warmup = 5000;
    constexpr std::uint64_t measured = 20'000;
    std::atomic<std::uint64_t> handled{0};
    auto o = alloc_options();
    o.queue_shards = shards;
    dispatcher<payload> pool(
        [&handled](payload& p, std::stop_token st) {
            p.bytes[0] = static_cast<char>(p.id);
            if (!st.stop_requested()) {
                handled.fetch_add(1, std::memory_order_release);  // pairs with the waits below
            }
        },
        o);

    auto submit_many = [&pool](std::uint64_t from, std::uint64_t n, int how) {
        for (std::uint64_t i = from; i < from + n; ++i) {
            payload p;
            p.id = i;
            submit_status s = submit_status::full;
            while (s != submit_status::accepted) {
                switch (how) {
                case 0:
                    s = pool.try_submit(std::move(p));
                    break;
                case 1:
                    s = pool.submit(std::move(p));
                    break;
                case 2:
                    s = pool.submit_for(std::move(p), 1s);
                    break;
                default:
                    s = pool.try_submit(std::move(p), job_options{.timeout = 5s});
                    break;
                }
                if (s == submit_status::full) {
                    std::this_thread::yield();
                }
            }
        }
    };

    // Warm-up: every path at least once, so lazily reserved storage exists.
    for (int how = 0; how < 4; ++how) {
        submit_many(static_cast<std::uint64_t>(how) * warmup, warmup, how);
    }
    REQUIRE(wait_quietly([&] { return handled.load(std::memory_order_acquire) == 4 * warmup; }));

    SECTION("one producer, try_submit") {
        const counts c = measure([&] {
            submit_many(0, measured, 0);
            (void)wait_quietly(
                [&] { return handled.load(std::memory_order_acquire) == 4 * warmup + measured; });
        });
        INFO("allocations: " << c.allocations << " (" << c.bytes << " bytes; by size:" << c.by_size
                             << "), deallocations: " << c.deallocations);
        CHECK(handled.load() == 4 * warmup + measured);
        CHECK(c.allocations == 0u);
        CHECK(c.bytes == 0u);
        CHECK(c.deallocations == 0u);
    }
    SECTION("two producers, submit, submit_for and per-request timeouts") {
        // Producers start before the window and end after it: starting a thread allocates and
        // ending one frees its state, neither of which is the pool's doing.
        std::atomic<int> go{0};
        std::atomic<int> finished{0};
        std::atomic<bool> may_exit{false};
        std::vector<std::thread> producers;
        for (int how = 1; how <= 3; ++how) {
            producers.emplace_back([&, how] {
                while (go.load(std::memory_order_acquire) == 0) {
                    std::this_thread::yield();
                }
                submit_many(static_cast<std::uint64_t>(how) * measured, measured, how);
                finished.fetch_add(1, std::memory_order_release);
                while (!may_exit.load(std::memory_order_acquire)) {
                    std::this_thread::yield();
                }
            });
        }
        const counts c = measure([&] {
            go.store(1, std::memory_order_release);
            (void)wait_quietly([&] { return finished.load(std::memory_order_acquire) == 3; });
            (void)wait_quietly([&] {
                return handled.load(std::memory_order_acquire) == 4 * warmup + 3 * measured;
            });
        });
        may_exit.store(true, std::memory_order_release);
        for (auto& t : producers) {
            t.join();
        }
        INFO("allocations: " << c.allocations << " (" << c.bytes << " bytes; by size:" << c.by_size
                             << "), deallocations: " << c.deallocations);
        CHECK(handled.load() == 4 * warmup + 3 * measured);
        CHECK(c.allocations == 0u);
        CHECK(c.deallocations == 0u);
    }
    const auto s = pool.stats();
    CHECK(s.timed_out == 0u);
    CHECK(s.failed == 0u);
}

TEST_CASE("an idle warmed-up pool with a timeout allocates nothing while it ticks",
          "[alloc][unit]") {
    std::atomic<std::uint64_t> handled{0};
    dispatcher<payload> pool(
        [&handled](payload&) { handled.fetch_add(1, std::memory_order_release); }, alloc_options());
    for (std::uint64_t i = 0; i < 100; ++i) {
        REQUIRE(pool.submit(payload{i, {}}) == submit_status::accepted);
    }
    REQUIRE(wait_quietly([&] { return handled.load(std::memory_order_acquire) == 100; }));
    std::atomic<std::uint64_t> ticks{0};
    const counts c = measure([&] {
        // 40 supervisor ticks of 5 ms, observed through stats() (which must not allocate either).
        const auto end = std::chrono::steady_clock::now() + 200ms;
        while (std::chrono::steady_clock::now() < end) {
            ticks.fetch_add(pool.stats().workers, std::memory_order_relaxed);
            std::this_thread::sleep_for(1ms);
        }
    });
    INFO("allocations: " << c.allocations << " (" << c.bytes << " bytes; by size:" << c.by_size
                         << ")");
    CHECK(ticks.load() > 0u);
    CHECK(c.allocations == 0u);
}

TEST_CASE("add_worker never throws and leaves the pool whole when an allocation fails",
          "[alloc][scaling][unit][regression]") {
    // Regression: add_worker recorded its scale-up event in a std::vector after the worker had
    // started, so a failed allocation there threw out of a function documented not to throw; and
    // spawning reserved the idle stack after adding the worker's slot, so a failure there left a
    // slot without a thread. Fail each allocation of an add_worker call in turn.
    STATIC_REQUIRE(noexcept(std::declval<workerpool::dispatcher<int>&>().add_worker()));
    std::atomic<int> started{0};
    std::atomic<int> stopped{0};
    std::atomic<int> events{0};
    workerpool::options<int> o;
    o.min_workers = 1;
    o.max_workers = 64;
    o.on_worker_start = [&](std::size_t) { started.fetch_add(1); };
    o.on_worker_stop = [&](std::size_t) { stopped.fetch_add(1); };
    o.on_event = [&](const workerpool::event& e) {
        if (e.kind == workerpool::event_kind::scale_up) {
            events.fetch_add(1);
        }
    };
    std::atomic<int> done{0};
    workerpool::dispatcher<int> pool([&](int&) { done.fetch_add(1); }, o);
    std::size_t expected = pool.worker_count();
    for (int n = 0; n < 12; ++n) {
        fail_after = n;
        const bool added = pool.add_worker();  // a throw fails the test case
        const bool failure_happened = fail_after == -1;
        fail_after = -1;
        expected += added ? 1 : 0;
        CHECK(pool.worker_count() == expected);
        CHECK((added || failure_happened));
    }
    CHECK(events.load() == static_cast<int>(expected) - 1);
    REQUIRE(
        workerpool::test::eventually([&] { return started.load() == static_cast<int>(expected); }));
    // Every slot has a thread that serves requests and goes to sleep: the pool is whole.
    for (int i = 0; i < 100; ++i) {
        REQUIRE(pool.try_submit(int{i}) == workerpool::submit_status::accepted);
    }
    REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));
    CHECK(done.load() == 100);
    REQUIRE(workerpool::test::eventually(
        [&] { return pool.stats().idle == static_cast<std::size_t>(expected); }));
    const auto report = pool.shutdown(std::chrono::seconds(5));
    CHECK(report.drained);
    CHECK(stopped.load() == started.load());
}

TEST_CASE("a pool allocates for the workers that exist, not for max_workers",
          "[alloc][scaling][unit][regression]") {
    // Bug: the constructor reserved max_workers + stuck_allowance pointers in two vectors up
    // front, so max_workers = INT_MAX (Java's cached-pool idiom) asked for ~32 GiB and threw
    // bad_alloc with 1 GiB of address space to spare, and SIZE_MAX wrapped the sum. Memory now
    // grows with the workers that exist.
    const std::size_t limit = GENERATE(std::size_t{std::numeric_limits<int>::max()},
                                       std::numeric_limits<std::size_t>::max());
    workerpool::options<int> o;
    o.min_workers = 2;
    o.max_workers = limit;
    o.stuck_allowance = std::numeric_limits<std::size_t>::max();
    std::atomic<int> done{0};
    std::optional<workerpool::dispatcher<int>> pool;
    const counts c = measure([&] { pool.emplace([&done](int&) { done.fetch_add(1); }, o); });
    INFO("max_workers " << limit << ": " << c.allocations << " allocations, " << c.bytes
                        << " bytes (by size:" << c.by_size << ")");
    CHECK(c.bytes <
          (std::uint64_t{1} << 20));  // the queue's rings and two workers: well under 1 MiB
    for (int i = 0; i < 100; ++i) {
        REQUIRE(pool->try_submit(int{i}) == submit_status::accepted);
    }
    REQUIRE(pool->wait_idle_for(30s));
    CHECK(pool->add_worker());
    CHECK(done.load() == 100);
}

TEST_CASE("bulk submits allocate nothing", "[alloc][bulk][unit]") {
    const std::size_t shards = GENERATE(1u, 3u);
    CAPTURE(shards);
    constexpr std::size_t span = 64;
    constexpr std::uint64_t rounds = 300;
    std::atomic<std::uint64_t> handled{0};
    auto o = alloc_options();
    o.queue_shards = shards;
    dispatcher<payload> pool(
        [&handled](payload&) { handled.fetch_add(1, std::memory_order_release); }, o);
    std::array<payload, span> batch{};
    auto submit_rounds = [&](std::uint64_t n, bool blocking) {
        for (std::uint64_t r = 0; r < n; ++r) {
            for (std::size_t i = 0; i < span; ++i) {
                batch[i].id = r * span + i;
            }
            std::size_t done = 0;
            while (done < span) {
                const std::span<payload> rest = std::span<payload>(batch).subspan(done);
                done += blocking ? pool.submit_bulk(rest) : pool.try_submit_bulk(rest);
            }
        }
    };
    submit_rounds(50, true);  // warm-up
    REQUIRE(wait_quietly([&] { return handled.load(std::memory_order_acquire) == 50 * span; }));
    const bool blocking = GENERATE(false, true);
    CAPTURE(blocking);
    const std::uint64_t before = handled.load();
    const counts c = measure([&] {
        submit_rounds(rounds, blocking);
        (void)wait_quietly(
            [&] { return handled.load(std::memory_order_acquire) == before + rounds * span; });
    });
    INFO("allocations: " << c.allocations << " (" << c.bytes << " bytes; by size:" << c.by_size
                         << ")");
    CHECK(handled.load() == before + rounds * span);
    CHECK(c.allocations == 0u);
}

TEST_CASE("a bulk through the scheduler that runs out of memory takes a prefix and leaves the "
          "rest whole",
          "[alloc][bulk][scheduler][unit]") {
    // Fails each allocation of the bulk in turn (the keys' map, a key's FIFO, a ready or timed
    // node), with a key, a not_before, both, and lanes: what it reports taken was moved from and
    // runs, the rest is whole, and the call counts as one refusal.
    const int kind = GENERATE(0, 1, 2, 3);
    CAPTURE(kind);
    using workerpool::test::job;
    constexpr std::size_t count = 20;
    bool all_in = false;
    for (int f = 0; f < 64 && !all_in; ++f) {
        CAPTURE(f);
        std::atomic<std::size_t> ran{0};
        auto o = workerpool::test::held_options<job>(64, 2);
        o.priority_lanes = kind == 3 ? 2 : 1;
        dispatcher<job> pool([&ran](job&) { ran.fetch_add(1); }, o);
        std::vector<job> batch = workerpool::test::jobs(0, static_cast<int>(count));
        workerpool::job_options jo;
        jo.key = kind == 0 || kind == 2 ? 7 : 0;
        jo.priority = kind == 3 ? 1U : 0U;
        if (kind == 1 || kind == 2) {
            jo.not_before = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        }
        fail_after = f;
        const std::size_t taken = pool.try_submit_bulk(std::span<job>(batch), jo);
        fail_after = -1;
        all_in = taken == count;
        std::size_t moved = 0;
        for (std::size_t i = 0; i < taken; ++i) {
            moved += batch[i].payload == nullptr ? 1U : 0U;
        }
        CHECK(moved == taken);
        CHECK(workerpool::test::whole_from(batch, taken) == static_cast<int>(count - taken));
        REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));
        CHECK(ran.load() == taken);
        const auto s = pool.stats();
        CHECK(s.submitted == taken);
        CHECK(s.rejected == (all_in ? 0U : 1U));
    }
    CHECK(all_in);  // enough room in the end: every allocation it makes was failed once
}

TEST_CASE("a blocking submit through the scheduler that cannot allocate returns full at once",
          "[alloc][scheduler][unit][regression]") {
    // Regression: the scheduler reports an allocation failure as `full`, and the blocking submit
    // then waited for room in the request's lane, which had room, so it tried again at once: it
    // spun for as long as memory ran out. Every blocking submit through the scheduler (submit,
    // submit_for, submit_tracked, submit_bulk; with a key, a not_before, a key in a lane) returns
    // `full` (the bulk: the prefix it took, none) without waiting, leaves the request whole and
    // counts one refusal.
    const int kind = GENERATE(0, 1, 2);
    const int call = GENERATE(0, 1, 2, 3);
    CAPTURE(kind, call);
    using workerpool::test::job;
    auto o = workerpool::test::held_options<job>(64, 1);
    o.priority_lanes = kind == 2 ? 2 : 1;
    std::atomic<int> ran{0};
    dispatcher<job> pool([&ran](job&) { ran.fetch_add(1); }, o);
    // A first tracked request makes the slab of completions, which a tracked submit would
    // otherwise allocate (and throw for) before it reaches the scheduler.
    REQUIRE(pool.submit_tracked(job(0)).handle.wait_for(std::chrono::seconds(30)));
    workerpool::job_options jo;
    jo.key = kind == 1 ? 0 : 7;  // each keyed or timed request allocates in the scheduler
    jo.priority = kind == 2 ? 1U : 0U;
    if (kind == 1) {  // far enough not to have come when the submit runs: held in the timed map
        jo.not_before = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    std::atomic<bool> failing{true};
    std::atomic<bool> returned{false};
    submit_status status = submit_status::accepted;
    std::size_t taken = 99;
    bool whole_after = false;
    std::vector<job> batch = workerpool::test::jobs(100, 3);
    std::thread producer([&] {  // no assertions here: Catch2 wants them on the test's thread
        job p(42);
        fail_while = &failing;
        switch (call) {
        case 0:
            status = pool.submit(std::move(p), jo);
            break;
        case 1:
            status = pool.submit_for(std::move(p), std::chrono::hours(1), jo);
            break;
        case 2:
            status = pool.submit_tracked(std::move(p), jo).status;
            break;
        default:
            taken = pool.submit_bulk(std::span<job>(batch), jo);
            break;
        }
        fail_while = nullptr;
        whole_after = workerpool::test::untouched(p, 42);
        returned.store(true);
    });
    // It returns while memory is still out; a submit that waits for memory would return only once
    // `failing` is cleared below.
    const bool returned_while_failing =
        workerpool::test::eventually([&] { return returned.load(); }, std::chrono::seconds(10));
    failing.store(false);
    producer.join();
    CHECK(returned_while_failing);
    if (call == 3) {
        CHECK(taken == 0);
        CHECK(workerpool::test::whole_from(batch, 0) == 3);
    } else {
        CHECK(status == submit_status::full);
        CHECK(whole_after);  // untouched
    }
    CHECK(pool.stats().rejected == 1);
    CHECK(pool.stats().submitted == 1);  // the first tracked request only
    // Memory back, the pool takes requests again.
    if (kind == 1) {
        jo.not_before = std::chrono::steady_clock::now();
    }
    REQUIRE(pool.submit(job(1), jo) == submit_status::accepted);
    REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));
    CHECK(ran.load() == 2);
}

TEST_CASE("the supervisor does not spin while it has no memory to move due requests up",
          "[alloc][scheduler][supervisor][unit][regression]") {
    // Regression: when moving a request whose not_before had come into its ready list failed for
    // want of memory, the scheduler asked the supervisor to come back at once, and the supervisor
    // looped for as long as memory was short. It now comes back a millisecond later, as it does
    // for a cancel it could not purge. Twelve requests due at once: the ready list needs new
    // blocks for them while every allocation fails (the one worker is held meanwhile).
    const auto o = workerpool::test::held_options<payload>(64, 1);
    std::atomic<int> ran{0};
    workerpool::test::gate g;
    dispatcher<payload> pool(
        [&](payload& p) {
            if (p.id == 0) {
                g.wait();
            }
            ran.fetch_add(1);
        },
        o);
    const workerpool::test::finally open([&] {
        fail_everywhere.store(false);
        g.open();
    });
    REQUIRE(pool.submit(payload{}) == submit_status::accepted);  // id 0: holds the worker
    REQUIRE(workerpool::test::eventually([&] { return g.waiting() == 1; }));
    workerpool::job_options jo;
    jo.not_before = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    for (std::uint64_t i = 1; i <= 12; ++i) {
        payload p;
        p.id = i;
        REQUIRE(pool.submit(std::move(p), jo) == submit_status::accepted);
    }
    const std::uint64_t before = pool.stats().supervisor_wakeups;
    const auto start = std::chrono::steady_clock::now();
    fail_everywhere.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    fail_everywhere.store(false);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const std::uint64_t wakeups = pool.stats().supervisor_wakeups - before;
    const auto ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count());
    INFO(wakeups << " supervisor wake-ups in " << ms << " ms with no memory");
    CHECK(wakeups <= 2 * ms + 10);  // one a millisecond, with room for a late timer
    g.open();
    REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));  // memory back: every one runs
    CHECK(ran.load() == 13);
}

TEST_CASE("a keyed request that ends while no memory is left does not end the process",
          "[alloc][scheduler][unit][regression]") {
    // Regression: when a key drained and it was the last, key_queues shrank its map's buckets
    // (unordered_map::rehash(0)), which allocates, inside the worker's noexcept finish: with no
    // memory left, std::terminate. Shrinking is now skipped when it cannot allocate.
    const auto o = workerpool::test::held_options<payload>(64, 1);
    std::atomic<int> ran{0};
    workerpool::test::gate g;
    dispatcher<payload> pool(
        [&](payload&) {
            g.wait();
            ran.fetch_add(1);
        },
        o);
    const workerpool::test::finally open([&] {
        fail_everywhere.store(false);
        g.open();
    });
    workerpool::job_options jo;
    jo.key = 7;
    REQUIRE(pool.submit(payload{}, jo) == submit_status::accepted);
    REQUIRE(workerpool::test::eventually([&] { return g.waiting() == 1; }));
    fail_everywhere.store(true);
    g.open();  // it ends, its key drains, with every allocation failing
    const bool idle = pool.wait_idle_for(std::chrono::seconds(30));
    fail_everywhere.store(false);
    CHECK(idle);
    CHECK(ran.load() == 1);
    REQUIRE(pool.submit(payload{}, jo) == submit_status::accepted);  // the key works again
    REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));
    CHECK(ran.load() == 2);
}

TEST_CASE("every accepted request ends exactly once through a window with no memory at all",
          "[alloc][scheduler][unit]") {
    // Every allocation of every thread fails for 300 ms while a producer submits a mix (the ring,
    // keys, start times, two lanes; some requests fail once and retry): no thread ends the
    // process, and once memory is back every accepted request has ended exactly once, completed
    // or in on_failure. What the pool could not allocate for it refused (`full`).
    const unsigned lanes = GENERATE(1U, 2U);
    CAPTURE(lanes);
    auto o = workerpool::test::held_options<payload>(256, 2);
    o.priority_lanes = lanes;
    o.default_timeout = std::chrono::seconds(1);
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = std::chrono::milliseconds(1);
    o.retry.jitter = workerpool::jitter_mode::none;
    std::atomic<std::uint64_t> completed{0};
    std::atomic<std::uint64_t> failed{0};
    o.on_failure = [&failed](workerpool::failure<payload>&&) { failed.fetch_add(1); };
    dispatcher<payload> pool(
        [&completed](payload& p) {
            if (p.id % 7 == 0 && p.bytes[0]++ == 0) {
                throw std::runtime_error("fails once");  // under no memory: bad_alloc instead
            }
            completed.fetch_add(1);
        },
        o);
    std::atomic<bool> stop{false};
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    std::thread producer([&] {  // no assertions here
        for (std::uint64_t i = 1; !stop.load(); ++i) {
            payload p;
            p.id = i;
            workerpool::job_options jo;
            jo.key = i % 5 == 0 ? 1 + i % 3 : 0;
            jo.priority = lanes > 1 ? static_cast<unsigned>(i % 2) : 0U;
            if (i % 11 == 0) {
                jo.not_before = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
            }
            const submit_status st =
                i % 4 == 0 ? pool.submit_for(std::move(p), std::chrono::milliseconds(1), jo)
                           : pool.try_submit(std::move(p), jo);
            (st == submit_status::accepted ? accepted : refused) += 1;
            if (i % 64 == 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    fail_everywhere.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    fail_everywhere.store(false);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop.store(true);
    producer.join();
    REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));
    const auto report = pool.shutdown(std::chrono::seconds(5));
    INFO(accepted << " accepted, " << refused << " refused, " << completed.load() << " completed, "
                  << failed.load() << " failed");
    CHECK(accepted > 0);
    CHECK(report.unprocessed.empty());
    CHECK(completed.load() + failed.load() == accepted);
    CHECK(pool.stats().submitted == accepted);
}

TEST_CASE("tracked requests allocate nothing once the slab has room", "[alloc][handles][unit]") {
    constexpr std::size_t batch = 200;  // tracked requests alive at once
    constexpr std::uint64_t rounds = 50;
    workerpool::options<payload, std::uint64_t> o;
    o.capacity = 512;
    o.min_workers = 2;
    o.max_workers = 2;
    o.default_timeout = 10s;
    dispatcher<payload, std::uint64_t> pool([](payload& p) { return p.id * 2; }, o);
    std::vector<workerpool::handle<std::uint64_t>> handles;
    handles.reserve(batch);
    std::uint64_t sum = 0;
    auto run_rounds = [&](std::uint64_t n) {
        for (std::uint64_t r = 0; r < n; ++r) {
            for (std::size_t i = 0; i < batch; ++i) {
                payload p;
                p.id = r * batch + i;
                auto t = pool.submit_tracked(std::move(p));
                if (t.status == submit_status::accepted) {
                    handles.push_back(std::move(t.handle));
                }
            }
            for (auto& h : handles) {
                sum += h.get();
            }
            handles.clear();
        }
    };
    run_rounds(3);  // warm-up: the slab grows to hold `batch` slots
    sum = 0;
    const counts c = measure([&] { run_rounds(rounds); });
    INFO("allocations: " << c.allocations << " (" << c.bytes << " bytes; by size:" << c.by_size
                         << ")");
    const std::uint64_t n = rounds * batch;
    CHECK(sum == n * (n - 1));  // every result came back: 2 * (0 + 1 + ... + n-1)
    CHECK(c.allocations == 0u);
}

TEST_CASE("a group submit that cannot allocate throws and leaves the group whole",
          "[alloc][handles][group][unit]") {
    workerpool::options<payload> o;
    o.min_workers = 1;
    o.max_workers = 1;
    dispatcher<payload> pool([](payload&) {}, o);
    workerpool::request_group<payload> group(pool);
    // A fresh pool's first tracked submit makes the slab's first chunk (64 slots, some KiB);
    // the group's own lists are far smaller.
    fail_from_bytes = 4096;
    payload p;
    p.id = 7;
    bool threw = false;
    try {
        (void)group.try_submit(std::move(p));
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    fail_from_bytes = 0;
    CHECK(threw);
    CHECK(p.id == 7u);  // untouched
    CHECK(group.outstanding() == 0u);
    CHECK(group.wait_for(1s));             // and the destructor will not wait for it
    auto t = group.try_submit(payload{});  // the group still works
    CHECK(t.status == submit_status::accepted);
    group.wait();
    CHECK(group.succeeded_count() == 1u);
}

TEST_CASE("tracked requests and a group end exactly once through a window with no memory at all",
          "[alloc][handles][group][unit]") {
    // As the window test above, with handles: tracked requests (some in a group, some cancelled
    // by their handle, the group cancelled in the window), a pool-wide and a per-key rate limit,
    // keys, start times and retries. A tracked submit that cannot allocate its slot throws
    // bad_alloc with the request untouched; every one accepted must end (its handle reaches a
    // final state) exactly once: in its handler or in on_failure.
    using workerpool::request_state;
    auto o = workerpool::test::held_options<payload, std::uint64_t>(256, 2);
    o.default_timeout = std::chrono::seconds(1);
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = std::chrono::milliseconds(1);
    o.retry.jitter = workerpool::jitter_mode::none;
    o.rate_limit = {200'000.0, 64};
    o.key_rate_limit = {20'000.0, 8};
    std::atomic<std::uint64_t> completed{0};
    std::atomic<std::uint64_t> failed{0};
    o.on_failure = [&failed](workerpool::failure<payload>&&) { failed.fetch_add(1); };
    dispatcher<payload, std::uint64_t> pool(
        [&completed](payload& p) {
            if (p.id % 7 == 0 && p.bytes[0]++ == 0) {
                throw std::runtime_error("fails once");
            }
            completed.fetch_add(1);
            return p.id;
        },
        o);
    workerpool::request_group<payload, std::uint64_t> group(pool);
    std::vector<workerpool::handle<std::uint64_t>> handles;
    handles.reserve(1'000'000);  // no growth in the window
    std::atomic<bool> stop{false};
    std::atomic<bool> window{false};
    std::uint64_t refused = 0;
    std::uint64_t threw = 0;
    std::uint64_t touched_by_refusal = 0;
    std::thread producer([&] {  // no assertions here
        bool group_cancelled = false;
        for (std::uint64_t i = 1; !stop.load() && handles.size() < handles.capacity(); ++i) {
            payload p;
            p.id = i;
            workerpool::job_options jo;
            jo.key = i % 5 == 0 ? 1 + i % 3 : 0;
            if (i % 11 == 0) {
                jo.not_before = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
            }
            try {
                workerpool::tracked<std::uint64_t> t =
                    i % 3 == 0 ? group.try_submit(std::move(p), jo)
                    : i % 4 == 0
                        ? pool.submit_for_tracked(std::move(p), std::chrono::milliseconds(1), jo)
                        : pool.try_submit_tracked(std::move(p), jo);
                if (t.status != submit_status::accepted) {
                    ++refused;
                    touched_by_refusal += p.id == i ? 0 : 1;
                    continue;
                }
                if (i % 13 == 0) {
                    (void)t.handle.cancel();
                }
                handles.push_back(std::move(t.handle));
            } catch (const std::bad_alloc&) {
                ++threw;
                touched_by_refusal += p.id == i ? 0 : 1;
            }
            if (!group_cancelled && window.load() && i % 3 == 0) {
                group.cancel();  // once, in the window
                group_cancelled = true;
            }
            if (i % 64 == 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    window.store(true);
    fail_everywhere.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    fail_everywhere.store(false);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop.store(true);
    producer.join();
    REQUIRE(pool.wait_idle_for(std::chrono::seconds(30)));
    REQUIRE(group.wait_for(std::chrono::seconds(30)));
    std::uint64_t succeeded = 0;
    std::uint64_t failed_state = 0;
    std::uint64_t cancelled = 0;
    std::uint64_t not_final = 0;
    for (const auto& h : handles) {
        const request_state s = h.state();
        succeeded += s == request_state::succeeded ? 1U : 0U;
        failed_state += s == request_state::failed ? 1U : 0U;
        cancelled += s == request_state::cancelled ? 1U : 0U;
        not_final += s != request_state::succeeded && s != request_state::failed &&
                             s != request_state::cancelled
                         ? 1U
                         : 0U;
    }
    const auto report = pool.shutdown(std::chrono::seconds(5));
    const auto accepted = static_cast<std::uint64_t>(handles.size());
    INFO(accepted << " accepted, " << refused << " refused, " << threw << " threw, "
                  << completed.load() << " completed, " << failed.load() << " failed");
    CHECK(accepted > 0);
    CHECK(touched_by_refusal == 0u);
    CHECK(not_final == 0u);
    CHECK(report.unprocessed.empty());
    // Each ended once: its handle's final state, and on_failure for each that did not succeed.
    // A handler that returned after its request was cancelled counts as completed, not as
    // succeeded (the request ends cancelled).
    CHECK(succeeded + failed_state + cancelled == accepted);
    CHECK(failed_state + cancelled == failed.load());
    CHECK(completed.load() >= succeeded);
    CHECK(completed.load() <= succeeded + cancelled);
    CHECK(pool.stats().submitted == accepted);
    CHECK(group.outstanding() == 0u);
}

TEST_CASE("a shutdown that runs out of memory loses no request", "[alloc][shutdown][unit]") {
    // A held worker, a ring with requests in it, requests behind a key, waiting for a start time
    // and waiting out a retry; then the n-th allocation of the thread that shuts down fails, for
    // every n until one shutdown makes no more. Each accepted request must come back exactly
    // once: in a report, in on_failure, or run (the held one is cancelled). shutdown() throws
    // bad_alloc, and a second call goes on from there (each event once) and returns what the
    // first had collected; the destructor does not throw (nor wait for ever for the handler it
    // could not stop).
    const bool explicit_shutdown = GENERATE(true, false);
    CAPTURE(explicit_shutdown);
    bool fired = true;
    for (int n = 0; fired; ++n) {
        CAPTURE(n);
        auto o = workerpool::test::held_options<payload>(64, 1);
        o.retry.max_attempts = 3;
        o.retry.initial_backoff = std::chrono::hours(1);
        o.retry.jitter = workerpool::jitter_mode::none;
        std::atomic<std::uint64_t> completed{0};
        std::atomic<std::uint64_t> failed{0};
        o.on_failure = [&failed](workerpool::failure<payload>&&) { failed.fetch_add(1); };
        std::array<std::atomic<int>, 3> events{};  // shutdown_begin, grace_over, shutdown_done
        o.on_event = [&events](const workerpool::event& e) {
            using workerpool::event_kind;
            const int i = e.kind == event_kind::shutdown_begin        ? 0
                          : e.kind == event_kind::shutdown_grace_over ? 1
                          : e.kind == event_kind::shutdown_done       ? 2
                                                                      : -1;
            if (i >= 0) {
                events[static_cast<std::size_t>(i)].fetch_add(1);
            }
        };
        workerpool::test::gate hold;
        std::uint64_t accepted = 0;
        std::size_t handed_back = 0;
        bool drained = true;  // what the report that handed the requests back said
        int threw = 0;
        {
            dispatcher<payload> pool(
                [&](payload& p, const std::stop_token& st) {
                    if (p.id == 1) {
                        throw std::runtime_error("retry in an hour");
                    }
                    if (!hold.wait(st)) {
                        throw workerpool::test::stopped_by_token{};
                    }
                    completed.fetch_add(1);
                },
                o);
            const auto submit = [&](std::uint64_t id, workerpool::job_options jo = {}) {
                payload p;
                p.id = id;
                accepted += pool.try_submit(std::move(p), jo) == submit_status::accepted ? 1U : 0U;
            };
            submit(1);  // fails, waits out its backoff
            REQUIRE(workerpool::test::eventually([&] { return pool.stats().retry_pending == 1; }));
            submit(2);  // holds the worker
            REQUIRE(workerpool::test::eventually([&] { return hold.waiting() == 1; }));
            for (std::uint64_t id = 3; id < 120; ++id) {
                workerpool::job_options jo;
                if (id % 3 == 0) {
                    jo.key = 1 + id % 2U;
                } else if (id % 3 == 1) {
                    jo.not_before = std::chrono::steady_clock::now() + std::chrono::hours(1);
                }
                submit(id, jo);
            }
            REQUIRE(accepted > 90u);
            fail_after = n;
            if (explicit_shutdown) {
                for (int call = 0; call < 2; ++call) {
                    try {
                        const auto report = pool.shutdown(std::chrono::milliseconds(0));
                        handed_back += report.unprocessed.size();
                        if (!report.unprocessed.empty()) {
                            drained = report.drained;
                        }
                    } catch (const std::bad_alloc&) {
                        ++threw;
                    }
                }
                fired = fail_after < 0;
                fail_after = -1;
                CHECK(threw <= 1);  // some allocations it does without (a sorting of handles)
                // The call after the one that threw went on from there: each event once.
                CHECK(events[0].load() == 1);
                CHECK(events[1].load() == 1);  // the held request was cancelled
                CHECK(events[2].load() == 1);
                CHECK_FALSE(drained);
            }
            // else: the destructor shuts down
        }
        if (!explicit_shutdown) {
            fired = fail_after < 0;
            fail_after = -1;
        }
        INFO(accepted << " accepted, " << completed.load() << " completed, " << failed.load()
                      << " failed, " << handed_back << " handed back");
        CHECK(completed.load() + failed.load() + handed_back == accepted);
        REQUIRE(n < 100);
    }
}
