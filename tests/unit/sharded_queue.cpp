// detail::sharded_queue on its own: the constructor's checks; exact capacity over rings of unequal
// size, a push spilling into the other rings when its home ring is full; one producer's FIFO order
// while its home ring has room; consume finding elements in any ring; close() accounting over all
// rings; a close racing producers; 4x4 MPMC exactly-once on 1 to 8 shards; destruction of what is
// still queued; and the home rule itself (consecutive homes per queue, the thread's memory of its
// homes in the eight queues it pushed to most recently, a one-shard queue).
//
// The home rule: each queue deals out its own homes. The first thread to push to a queue (or to
// ask its home_shard()) gets ring 0 there, the next thread ring 1, and so on modulo the shard
// count, whatever other queues those threads pushed to. A thread remembers its home in the eight
// queues it pushed to most recently (detail::home_cache, least recently used first to go: a queue
// the thread keeps pushing to keeps its home however many others it pushes to in between); one
// that comes back to a queue it has forgotten takes the next home in that queue's round. So on a
// new queue the homes are known: where the home matters, a test runs once per ring and lets `run`
// new threads take homes first (take_homes), so that the thread under test gets ring `run`.
// Threads only record; assertions run after they are joined.

#include <workerpool/detail/sharded_queue.hpp>
#include <workerpool/status.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace {

using workerpool::submit_status;
using workerpool::detail::sharded_queue;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::tracked;
using workerpool::test::under_tsan;

// A total capacity and a shard count.
struct shape {
    std::size_t capacity;
    std::size_t shards;
};

// Runs `f` on a new thread and joins it. A new thread has a home in no queue yet, so in each
// queue it pushes to it takes that queue's next home: consecutive calls that push to the same
// queue push from its homes 0, 1, 2, ... in turn (shifted by one for every other thread that took
// a home in that queue before).
template <class F>
void on_new_thread(F&& f) {
    std::jthread t(std::forward<F>(f));
}

// Lets `n` new threads, one after another, take the next `n` homes in `q`, so that the next thread
// to push to `q` (or to ask its home) gets home `n % q.shard_count()`.
template <class T>
void take_homes(sharded_queue<T>& q, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        on_new_thread([&q] { static_cast<void>(q.home_shard()); });
    }
}

// Pops `n` elements, each pop starting at `home`; returns their values (-1 for a failed pop).
std::vector<int> pop_from(sharded_queue<int>& q, std::size_t home, std::size_t n) {
    std::vector<int> out;
    for (std::size_t i = 0; i < n; ++i) {
        int v = -1;
        static_cast<void>(q.consume(home, [&v](int&& e) noexcept { v = e; }));
        out.push_back(v);
    }
    return out;
}

using queue_list = std::vector<std::unique_ptr<sharded_queue<int>>>;

// What one new thread saw pushing j to *q[visits[j]] for j = 0, 1, ...: each push's answer, and
// the thread's home in that queue right after the push.
struct visit_report {
    std::vector<submit_status> pushed;
    std::vector<std::size_t> homes;
};

visit_report visit_on_new_thread(const queue_list& q, const std::vector<std::size_t>& visits) {
    visit_report r{std::vector<submit_status>(visits.size(), submit_status::closed),
                   std::vector<std::size_t>(visits.size(), 99)};
    on_new_thread([&] {
        for (std::size_t j = 0; j < visits.size(); ++j) {
            sharded_queue<int>& target = *q[visits[j]];
            r.pushed[j] = target.try_emplace(static_cast<int>(j));
            r.homes[j] = target.home_shard();
        }
    });
    return r;
}

// Checks that each push j of visit_on_new_thread landed in ring expected[j] of its queue (where
// every ring had room): ring r of q[i] holds exactly the pushes to q[i] whose expected home is r,
// in push order. Each pop starts at ring r and is made only while ring r itself holds elements,
// so that no pop goes round to the next ring (elements spread over rings in the order a pop goes
// round them would otherwise pass as one ring's).
void check_rings(const queue_list& q, const std::vector<std::size_t>& visits,
                 const std::vector<std::size_t>& expected) {
    for (std::size_t i = 0; i < q.size(); ++i) {
        for (std::size_t ring = 0; ring < q[i]->shard_count(); ++ring) {
            CAPTURE(i, ring);
            std::vector<int> in_ring;
            for (std::size_t j = 0; j < visits.size(); ++j) {
                if (visits[j] == i && expected[j] == ring) {
                    in_ring.push_back(static_cast<int>(j));
                }
            }
            std::vector<int> popped;
            while (popped.size() < in_ring.size() && q[i]->has_claimed_elements_at(ring)) {
                popped.push_back(pop_from(*q[i], ring, 1).front());
            }
            CHECK(popped == in_ring);
            CHECK_FALSE(q[i]->has_claimed_elements_at(ring));
        }
        CAPTURE(i);
        CHECK_FALSE(q[i]->has_claimed_elements());
    }
}

// What pushing 0, 1, 2, ... until the first refusal gave.
struct fill_report {
    std::size_t accepted = 0;
    submit_status refusal = submit_status::accepted;  // the first refused push's answer
    bool refused_value_untouched = false;             // that push's argument kept its value
};

// Pushes unique_ptrs to first, first + 1, ... until a push is refused (at most `limit` tries).
fill_report fill(sharded_queue<std::unique_ptr<int>>& q, std::size_t limit, int first = 0) {
    fill_report r;
    for (std::size_t k = 0; k < limit; ++k) {
        const int value = first + static_cast<int>(k);
        auto p = std::make_unique<int>(value);
        const submit_status s = q.try_emplace(std::move(p));
        if (s != submit_status::accepted) {
            r.refusal = s;
            // NOLINTNEXTLINE(bugprone-use-after-move): a refused push leaves `p` untouched
            r.refused_value_untouched = p != nullptr && *p == value;
            return r;
        }
        ++r.accepted;
    }
    return r;
}

// Pops everything, starting each pop at the next home index; returns the values in pop order.
template <class T, class Value>
std::vector<int> drain(sharded_queue<T>& q, Value value_of) {
    std::vector<int> out;
    for (std::size_t home = 0;; ++home) {
        int v = 0;
        if (!q.consume(home, [&](T&& e) noexcept { v = value_of(e); })) {
            return out;
        }
        out.push_back(v);
    }
}

std::vector<int> drain(sharded_queue<std::unique_ptr<int>>& q) {
    return drain(q, [](const std::unique_ptr<int>& p) { return p ? *p : -1; });
}

std::vector<int> drain(sharded_queue<int>& q) {
    return drain(q, [](int v) { return v; });
}

std::vector<int> iota(int first, int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), first);
    return v;
}

std::vector<int> sorted(std::vector<int> v) {
    std::sort(v.begin(), v.end());
    return v;
}

}  // namespace

TEST_CASE("sharded_queue needs 0 < shards <= capacity", "[sharded_queue][unit]") {
    CHECK_THROWS_AS((sharded_queue<int>{0, 1}), std::invalid_argument);
    CHECK_THROWS_AS((sharded_queue<int>{0, 0}), std::invalid_argument);
    CHECK_THROWS_AS((sharded_queue<int>{4, 0}), std::invalid_argument);
    CHECK_THROWS_AS((sharded_queue<int>{4, 5}), std::invalid_argument);
    CHECK_THROWS_AS((sharded_queue<int>{1, 2}), std::invalid_argument);

    // shards == capacity: every ring has one slot, and every slot is usable.
    for (const std::size_t capacity : {1u, 2u, 7u, 16u}) {
        INFO("capacity = shards = " << capacity);
        sharded_queue<int> q{capacity, capacity};
        CHECK(q.capacity() == capacity);
        CHECK(q.shard_count() == capacity);
        CHECK(q.free_slots() == capacity);
        CHECK(q.approx_size() == 0u);
        CHECK_FALSE(q.has_claimed_elements());
        CHECK_FALSE(q.is_closed());
        std::size_t accepted = 0;
        while (accepted <= capacity &&
               q.try_emplace(static_cast<int>(accepted)) == submit_status::accepted) {
            ++accepted;
        }
        CHECK(accepted == capacity);
        CHECK(q.free_slots() == 0u);
        CHECK(sorted(drain(q)) == iota(0, static_cast<int>(capacity)));
    }
}

TEST_CASE("sharded_queue holds exactly its capacity, spilling from a full home shard into the "
          "others",
          "[sharded_queue][unit]") {
    const std::array<shape, 7> shapes{{{10, 3}, {7, 7}, {13, 5}, {16, 4}, {5, 2}, {8, 1}, {1, 1}}};
    for (const shape& sh : shapes) {
        const std::size_t capacity = sh.capacity;  // not a structured binding: a lambda uses it
        const std::size_t shards = sh.shards;
        // Once per home shard: `run` other threads take homes first, so the filling thread's home
        // is ring `run`.
        for (std::size_t run = 0; run < shards; ++run) {
            CAPTURE(capacity, shards, run);
            sharded_queue<std::unique_ptr<int>> q{capacity, shards};
            take_homes(q, run);
            fill_report first;
            std::size_t first_home = 99;
            on_new_thread([&] {
                first = fill(q, capacity + 1);
                first_home = q.home_shard();
            });
            CHECK(first_home == run);
            CHECK(first.accepted == capacity);
            CHECK(first.refusal == submit_status::full);
            CHECK(first.refused_value_untouched);
            CHECK(q.free_slots() == 0u);
            CHECK(q.approx_size() == capacity);
            CHECK(q.pushed_count() == capacity);

            // One pop frees one slot, wherever it is, and exactly one more push fits (from this
            // thread, whose home is the next ring: the push goes round to the free slot). The
            // filler filled its home ring first, so that ring's head is its first element.
            int taken = -1;
            REQUIRE(q.consume(run, [&](std::unique_ptr<int>&& p) noexcept { taken = *p; }));
            CHECK(taken == 0);
            CHECK(q.free_slots() == 1u);
            const fill_report second = fill(q, 2, 1000);
            CHECK(second.accepted == 1u);
            CHECK(second.refusal == submit_status::full);
            CHECK(second.refused_value_untouched);
            CHECK(q.free_slots() == 0u);

            // Every accepted element is there once; the refused ones are not.
            std::vector<int> expected = iota(0, static_cast<int>(capacity));
            const auto at = std::find(expected.begin(), expected.end(), taken);
            REQUIRE(at != expected.end());
            expected.erase(at);
            expected.push_back(1000);
            CHECK(sorted(drain(q)) == sorted(expected));
            CHECK(q.free_slots() == capacity);
        }
    }
}

TEST_CASE("one producer's elements come out in push order while its home shard has room",
          "[sharded_queue][unit]") {
    const std::array<shape, 6> shapes{{{10, 3}, {12, 4}, {7, 2}, {9, 1}, {8, 8}, {20, 6}}};
    for (const auto& [capacity, shards] : shapes) {
        const std::size_t k = capacity / shards;  // the smallest shard's size: no spill
        for (std::size_t run = 0; run < shards; ++run) {
            CAPTURE(capacity, shards, k, run);
            sharded_queue<int> q{capacity, shards};
            take_homes(q, run);  // so that the producer's home is ring `run`
            std::size_t accepted = 0;
            std::size_t home = 99;
            on_new_thread([&] {
                for (std::size_t i = 0; i < k; ++i) {
                    accepted += q.try_emplace(static_cast<int>(i)) == submit_status::accepted;
                }
                home = q.home_shard();
            });
            REQUIRE(accepted == k);
            CHECK(home == run);
            // Each pop starts at another shard; all of them must find the same shard's head.
            std::vector<int> out;
            for (std::size_t i = 0; i < k; ++i) {
                int v = -1;
                CHECK(q.consume(run + 5 * i, [&](int&& e) noexcept { v = e; }));
                out.push_back(v);
            }
            CHECK(out == iota(0, static_cast<int>(k)));
            CHECK_FALSE(q.consume(0, [](int&&) noexcept {}));
        }
    }
}

TEST_CASE("a thread's bulks go round the shards, one shard each while it has room, each in order",
          "[sharded_queue][home][unit]") {
    // So that one producer's bulks reach every worker's ring, not only its home's; with the home
    // left where it was, all three bulks would be in ring 1 (and ring 0 and 2 empty).
    sharded_queue<int> q{12, 3};  // rings of 4
    take_homes(q, 1);             // the thread below starts at ring 1
    std::vector<std::size_t> taken;
    std::vector<std::size_t> homes;
    on_new_thread([&] {
        for (int b = 0; b < 4; ++b) {
            const auto r = q.try_emplace_bulk(3, [b](std::size_t i, void* where) noexcept {
                ::new (where) int(10 * b + static_cast<int>(i));
            });
            taken.push_back(r.accepted);
            homes.push_back(q.home_shard());
        }
    });
    CHECK(taken == std::vector<std::size_t>{3, 3, 3, 3});
    CHECK(homes == std::vector<std::size_t>{2, 0, 1, 2});
    // Ring 1 holds bulk 0 then the first of bulk 3 (its last two spilled into ring 2, then 0).
    CHECK(pop_from(q, 1, 4) == std::vector<int>{0, 1, 2, 30});
    CHECK(pop_from(q, 2, 4) == std::vector<int>{10, 11, 12, 31});
    CHECK(pop_from(q, 0, 4) == std::vector<int>{20, 21, 22, 32});
    CHECK_FALSE(q.has_claimed_elements());
}

TEST_CASE("two producers' elements each stay in push order when no shard overflows",
          "[sharded_queue][unit]") {
    constexpr int producers = 2;
    constexpr int per_producer = 300;
    for (const std::size_t shards : {1u, 2u, 3u, 4u}) {
        CAPTURE(shards);
        // Every shard can hold both producers' elements, so nothing spills wherever they land
        // (with two rings or more, their homes are rings 0 and 1, in the order they first push).
        sharded_queue<int> q{shards * producers * per_producer, shards};
        std::vector<int> refused(producers, 0);
        {
            gate start;
            std::vector<std::jthread> threads;
            threads.reserve(producers);
            finally open_on_exit(
                [&] { start.open(); });  // destroyed first: opens the gate before the joins
            for (int p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    start.wait();
                    for (int i = 0; i < per_producer; ++i) {
                        if (q.try_emplace(p * per_producer + i) != submit_status::accepted) {
                            ++refused[static_cast<std::size_t>(p)];
                        }
                    }
                });
            }
            REQUIRE(eventually([&] { return start.waiting() == std::size_t{producers}; }));
        }  // opens the gate, then joins
        CHECK(refused == std::vector<int>(producers, 0));

        std::vector<int> last(producers, -1);
        int out_of_order = 0;
        const std::vector<int> out = drain(q);
        for (const int v : out) {
            const auto p = static_cast<std::size_t>(v / per_producer);
            out_of_order += v <= last[p] ? 1 : 0;
            last[p] = v;
        }
        CHECK(out_of_order == 0);
        CHECK(sorted(out) == iota(0, producers * per_producer));
    }
}

TEST_CASE("consume finds an element in any shard, whatever home it starts at",
          "[sharded_queue][unit]") {
    const std::array<shape, 5> shapes{{{10, 3}, {12, 4}, {6, 6}, {5, 2}, {4, 1}}};
    for (const auto& [capacity, shards] : shapes) {
        CAPTURE(capacity, shards);
        sharded_queue<int> q{capacity, shards};
        int v = -1;
        auto take = [&v](int&& e) noexcept { v = e; };

        // Nothing to find: false from every home, including homes past the shard count.
        for (std::size_t home = 0; home < 2 * shards + 1; ++home) {
            CHECK_FALSE(q.consume(home, take));
        }

        // One element, in this thread's home shard (ring 0: it is the first thread to push to
        // `q`): a pop from every home finds it.
        for (std::size_t home = 0; home < 2 * shards; ++home) {
            REQUIRE(q.try_emplace(static_cast<int>(home)) == submit_status::accepted);
            v = -1;
            CHECK(q.consume(home, take));
            CHECK(v == static_cast<int>(home));
            CHECK_FALSE(q.consume(home, take));
        }

        // Every shard full (one pusher, spilling): pops from each home in turn all succeed until
        // exactly `capacity` elements have come out, each once.
        REQUIRE(q.free_slots() == capacity);
        for (std::size_t i = 0; i < capacity; ++i) {
            REQUIRE(q.try_emplace(static_cast<int>(i)) == submit_status::accepted);
        }
        if (capacity % shards == 0) {
            // Then the pusher filled shards 0, 1, ... (from its home, ring 0) with consecutive
            // blocks of r, so one pop from each home takes that shard's head: 0, r, 2r, ...
            const std::size_t r = capacity / shards;
            std::vector<int> heads;
            std::vector<int> expected;
            for (std::size_t home = 0; home < shards; ++home) {
                v = -1;
                CHECK(q.consume(home, take));
                heads.push_back(v);
                expected.push_back(static_cast<int>(home * r));
            }
            CHECK(heads == expected);
            for (const int h : heads) {  // put them back, for the count below
                REQUIRE(q.try_emplace(int{h}) == submit_status::accepted);
            }
        }
        std::vector<int> out;
        for (std::size_t home = 0; home < capacity; ++home) {
            v = -1;
            CHECK(q.consume(home % shards, take));
            out.push_back(v);
        }
        CHECK(sorted(out) == iota(0, static_cast<int>(capacity)));
        for (std::size_t home = 0; home < shards; ++home) {
            CHECK_FALSE(q.consume(home, take));
        }
    }
}

TEST_CASE("close counts the pushes of every shard, refuses later ones and lets the rest drain",
          "[sharded_queue][unit]") {
    const std::array<shape, 4> shapes{{{10, 1}, {10, 3}, {8, 8}, {9, 4}}};
    for (const auto& [capacity, shards] : shapes) {
        CAPTURE(capacity, shards);
        sharded_queue<std::unique_ptr<int>> q{capacity, shards};
        // Four from this thread (home ring 0), three from another (home ring 1 if there is one).
        REQUIRE(fill(q, 4).accepted == 4u);
        fill_report other;
        on_new_thread([&] { other = fill(q, 3, 4); });
        REQUIRE(other.accepted == 3u);
        std::vector<int> out;
        for (int i = 0; i < 2; ++i) {  // popped elements still count as pushed
            REQUIRE(q.consume(0, [&](std::unique_ptr<int>&& p) noexcept { out.push_back(*p); }));
        }
        CHECK(out == std::vector<int>{0, 1});  // this thread's first two, from ring 0 on
        CHECK_FALSE(q.is_closed());
        CHECK(q.pushed_count() == 7u);
        CHECK(q.approx_size() == 5u);
        CHECK(q.free_slots() == capacity - 5);
        CHECK(q.has_claimed_elements());

        CHECK(q.close() == 7u);
        CHECK(q.is_closed());
        CHECK(q.close() == 7u);  // idempotent

        // Refused from this thread and from a new one, argument untouched.
        const fill_report late = fill(q, 1, 100);
        CHECK(late.accepted == 0u);
        CHECK(late.refusal == submit_status::closed);
        CHECK(late.refused_value_untouched);
        fill_report late_other;
        on_new_thread([&] { late_other = fill(q, 1, 101); });
        CHECK(late_other.accepted == 0u);
        CHECK(late_other.refusal == submit_status::closed);
        CHECK(late_other.refused_value_untouched);
        CHECK(q.pushed_count() == 7u);
        CHECK(q.approx_size() == 5u);
        CHECK(q.free_slots() == capacity - 5);  // closing frees nothing and takes nothing

        // Everything accepted before the close comes out, once.
        const std::vector<int> rest = drain(q);
        CHECK(rest.size() == 5u);
        out.insert(out.end(), rest.begin(), rest.end());
        CHECK(sorted(out) == iota(0, 7));
        CHECK_FALSE(q.has_claimed_elements());
        CHECK(q.approx_size() == 0u);
        CHECK(q.free_slots() == capacity);
        CHECK(q.pushed_count() == 7u);
        CHECK(q.close() == 7u);
    }

    {  // A full queue, once closed, answers closed rather than full.
        sharded_queue<std::unique_ptr<int>> q{10, 3};
        REQUIRE(fill(q, 11).accepted == 10u);
        CHECK(q.close() == 10u);
        const fill_report late = fill(q, 1, 100);
        CHECK(late.refusal == submit_status::closed);
        CHECK(late.refused_value_untouched);
        CHECK(sorted(drain(q)) == iota(0, 10));
    }
}

TEST_CASE("a close racing producers: close's count is what is popped, and closed stays closed",
          "[sharded_queue][close][unit]") {
    constexpr int producers = 3;
    constexpr int consumers = 2;
    const int close_after = under_tsan ? 1'500 : 5'000;  // accepted pushes before the close
    constexpr int max_per_producer = 1 << 20;  // a bound, so that a missing close cannot hang
    constexpr int pushes_after_closed = 64;    // per producer, once it knows of the close
    const std::array<shape, 4> shapes{{{8, 1}, {8, 3}, {16, 4}, {8, 8}}};
    for (const auto& [capacity, shards] : shapes) {
        CAPTURE(capacity, shards);
        std::vector<int> accepted(producers, 0);
        // Pushes that did not return closed although the thread knew of the close: it had seen
        // closed itself, or another producer had (flag below), or close() had returned.
        std::vector<int> not_closed_after_close(producers, 0);
        std::vector<int> knew_closed(producers, 0);
        std::vector<std::vector<int>> popped(consumers);
        std::uint64_t close_count = 0;
        submit_status after_close_here = submit_status::accepted;
        {
            sharded_queue<int> q{capacity, shards};
            std::atomic<int> total_accepted{0};  // relaxed: only paces the close
            std::atomic<bool> someone_saw_closed{false};
            std::atomic<bool> close_returned{false};
            std::atomic<bool> stop_consuming{false};
            gate start;
            std::vector<std::jthread> producer_threads;
            std::vector<std::jthread> consumer_threads;
            producer_threads.reserve(producers);
            consumer_threads.reserve(consumers);
            finally open_on_exit(
                [&] { start.open(); });  // destroyed first: opens the gate before the joins
            for (int p = 0; p < producers; ++p) {
                producer_threads.emplace_back([&, p] {
                    const auto pi = static_cast<std::size_t>(p);
                    start.wait();
                    bool knows = false;
                    int i = 0;
                    for (int after = 0; i < max_per_producer && after < pushes_after_closed;) {
                        // [T2] acquire: the answer seen before [T1], or close()'s return, happened
                        // before this push.
                        knows = knows || someone_saw_closed.load(std::memory_order_acquire) ||
                                close_returned.load(std::memory_order_acquire);
                        const submit_status s = q.try_emplace(p * max_per_producer + i);
                        if (knows) {
                            ++after;
                            not_closed_after_close[pi] += s != submit_status::closed ? 1 : 0;
                        }
                        if (s == submit_status::accepted) {
                            ++i;
                            total_accepted.fetch_add(1, std::memory_order_relaxed);
                        } else if (s == submit_status::closed && !knows) {
                            knows = true;
                            // [T1] release: pairs with [T2] in the other producers.
                            someone_saw_closed.store(true, std::memory_order_release);
                        } else if (s == submit_status::full) {
                            std::this_thread::yield();
                        }
                    }
                    accepted[pi] = i;
                    knew_closed[pi] = knows ? 1 : 0;
                });
            }
            for (int c = 0; c < consumers; ++c) {
                consumer_threads.emplace_back([&, c] {
                    auto& mine = popped[static_cast<std::size_t>(c)];
                    start.wait();
                    while (!stop_consuming.load(std::memory_order_acquire)) {
                        if (!q.consume(static_cast<std::size_t>(c),
                                       [&mine](int&& v) noexcept { mine.push_back(v); })) {
                            std::this_thread::yield();
                        }
                    }
                });
            }
            const bool all_waiting =
                eventually([&] { return start.waiting() == std::size_t{producers + consumers}; });
            start.open();
            const bool reached = eventually(
                [&] { return total_accepted.load(std::memory_order_relaxed) >= close_after; });
            close_count = q.close();
            close_returned.store(true, std::memory_order_release);  // pairs with [T2]
            after_close_here = q.try_emplace(-1);
            producer_threads.clear();  // joins
            stop_consuming.store(true, std::memory_order_release);
            consumer_threads.clear();
            REQUIRE(all_waiting);
            CHECK(reached);
            popped.push_back(drain(q));  // what the consumers left
            CHECK_FALSE(q.has_claimed_elements());
            CHECK(q.pushed_count() == close_count);
        }
        CHECK(after_close_here == submit_status::closed);
        CHECK(knew_closed == std::vector<int>(producers, 1));
        CHECK(not_closed_after_close == std::vector<int>(producers, 0));

        // Every accepted element popped once, nothing else, and as many as close() counted.
        std::uint64_t total_accepted = 0;
        std::vector<std::vector<std::uint8_t>> seen(producers);
        for (int p = 0; p < producers; ++p) {
            total_accepted += static_cast<std::uint64_t>(accepted[static_cast<std::size_t>(p)]);
            seen[static_cast<std::size_t>(p)].assign(
                static_cast<std::size_t>(accepted[static_cast<std::size_t>(p)]), 0);
        }
        std::uint64_t total_popped = 0;
        int bad = 0;
        int duplicates = 0;
        for (const auto& stream : popped) {
            for (const int v : stream) {
                ++total_popped;
                const int p = v / max_per_producer;
                const int i = v % max_per_producer;
                if (v < 0 || p >= producers || i >= accepted[static_cast<std::size_t>(p)]) {
                    ++bad;
                    continue;
                }
                auto& flag = seen[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)];
                duplicates += flag != 0 ? 1 : 0;
                flag = 1;
            }
        }
        CHECK(bad == 0);
        CHECK(duplicates == 0);
        CHECK(total_popped == total_accepted);
        CHECK(close_count == total_accepted);
    }
}

TEST_CASE("four producers and four consumers on 1 to 8 shards deliver every element exactly once",
          "[sharded_queue][mpmc][unit]") {
    constexpr int producers = 4;
    constexpr int consumers = 4;
    const int per_producer = under_tsan ? 1'000 : 2'500;  // 10k elements per shape without TSan
    const int total = producers * per_producer;
    const std::array<shape, 5> shapes{{{8, 1}, {8, 2}, {8, 3}, {16, 4}, {8, 8}}};
    for (const auto& [capacity, shards] : shapes) {
        CAPTURE(capacity, shards);
        // Per consumer: how often it saw each id.
        std::vector<std::vector<std::uint8_t>> seen(
            consumers, std::vector<std::uint8_t>(static_cast<std::size_t>(total)));
        std::vector<int> garbage(consumers, 0);
        std::vector<int> refused_closed(producers, 0);
        std::atomic<int> popped{0};          // relaxed: ends the consumers' loops
        std::atomic<int> producers_done{0};  // relaxed: bounds a consumer's wait for a lost element
        {
            sharded_queue<int> q{capacity, shards};
            gate start;
            std::vector<std::jthread> threads;
            threads.reserve(producers + consumers);
            finally open_on_exit(
                [&] { start.open(); });  // destroyed first: opens the gate before the joins
            for (int p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    start.wait();
                    for (int i = 0; i < per_producer;) {
                        const submit_status s = q.try_emplace(p * per_producer + i);
                        if (s == submit_status::accepted) {
                            ++i;
                        } else if (s == submit_status::full) {
                            std::this_thread::yield();
                        } else {
                            ++refused_closed[static_cast<std::size_t>(p)];
                            break;
                        }
                    }
                    producers_done.fetch_add(1, std::memory_order_relaxed);
                });
            }
            for (int c = 0; c < consumers; ++c) {
                threads.emplace_back([&, c] {
                    const auto ci = static_cast<std::size_t>(c);
                    start.wait();
                    auto& mine = seen[ci];
                    int idle_polls = 0;  // once the producers are done
                    while (popped.load(std::memory_order_relaxed) < total) {
                        const bool got = q.consume(ci, [&](int&& v) noexcept {
                            if (v < 0 || v >= total) {
                                ++garbage[ci];
                            } else {
                                ++mine[static_cast<std::size_t>(v)];
                            }
                        });
                        if (got) {
                            idle_polls = 0;
                            popped.fetch_add(1, std::memory_order_relaxed);
                            continue;
                        }
                        if (producers_done.load(std::memory_order_relaxed) == producers &&
                            ++idle_polls > 100'000) {
                            break;
                        }
                        std::this_thread::yield();
                    }
                });
            }
            REQUIRE(
                eventually([&] { return start.waiting() == std::size_t{producers + consumers}; }));
            start.open();
            for (auto& t : threads) {
                t.join();
            }
            CHECK(q.approx_size() == 0u);
            CHECK_FALSE(q.has_claimed_elements());
            CHECK(q.pushed_count() == static_cast<std::uint64_t>(total));
            CHECK(q.free_slots() == capacity);
        }
        const auto [missing, duplicated] = workerpool::test::tally_ids(seen, total);
        CHECK(popped.load() == total);
        CHECK(missing == 0);
        CHECK(duplicated == 0);
        CHECK(garbage == std::vector<int>(consumers, 0));
        CHECK(refused_closed == std::vector<int>(producers, 0));
    }
}

TEST_CASE("a sharded_queue destroys the elements still queued in every shard",
          "[sharded_queue][lifetime][unit]") {
    const std::array<shape, 3> shapes{{{10, 3}, {4, 4}, {5, 1}}};
    for (const shape& sh : shapes) {
        const std::size_t capacity = sh.capacity;  // not a structured binding: a lambda uses it
        const std::size_t shards = sh.shards;
        CAPTURE(capacity, shards);
        tracked::reset();
        {
            sharded_queue<tracked> q{capacity, shards};
            tracked out;
            auto take = [&out](tracked&& t) noexcept { out = std::move(t); };
            // Some laps first, so that the rings' positions have wrapped around.
            for (std::size_t round = 0; round < 3 * capacity; ++round) {
                REQUIRE(q.try_emplace(static_cast<int>(round)) == submit_status::accepted);
                REQUIRE(q.consume(round, take));
            }
            // Fill every shard, from this thread and from another.
            const std::size_t half = capacity / 2;
            for (std::size_t i = 0; i < half; ++i) {
                REQUIRE(q.try_emplace(static_cast<int>(i)) == submit_status::accepted);
            }
            std::size_t other = 0;
            on_new_thread([&] {
                while (other < capacity &&
                       q.try_emplace(static_cast<int>(half + other)) == submit_status::accepted) {
                    ++other;
                }
            });
            REQUIRE(half + other == capacity);
            tracked refused{-1};
            CHECK(q.try_emplace(std::move(refused)) == submit_status::full);
            CHECK_FALSE(refused.moved_from);  // NOLINT(bugprone-use-after-move): refused
            REQUIRE(q.consume(0, take));
            CHECK(tracked::live == static_cast<long>(capacity - 1) + 2);  // + out + refused
        }
        CHECK(tracked::live == 0);
        CHECK(tracked::misuse == 0);
    }

    // Owning pointers: a shard that forgot its elements would leak them (LeakSanitizer, asan).
    sharded_queue<std::unique_ptr<int>> q{7, 3};
    REQUIRE(fill(q, 7).accepted == 7u);
}

TEST_CASE("the threads that push to a queue take its homes 0, 1, 2, ... round its shards, whatever "
          "other queues they pushed to",
          "[sharded_queue][home][unit]") {
    constexpr int threads = 4;
    const auto all_accepted = std::vector<submit_status>(threads, submit_status::accepted);
    // Twice, on new queues and new threads: the second time, other queues have been pushed to and
    // other threads have taken homes before, which must change nothing.
    for (int round = 0; round < 2; ++round) {
        CAPTURE(round);
        sharded_queue<int> a{12, 3};  // four threads round three rings: homes 0, 1, 2, 0
        sharded_queue<int> b{8, 4};
        std::vector<submit_status> pushed_a(threads, submit_status::closed);
        std::vector<submit_status> pushed_b(threads, submit_status::closed);
        std::vector<std::size_t> home_a(threads, 99);
        std::vector<std::size_t> home_b(threads, 99);
        {
            // The steps run one at a time, in the order of `turn`: thread k pushes k to `a` at
            // turn k, then 100 + k to `b` at turn 7 - k, so the threads reach `b` in the opposite
            // order, each with a home in `a` already (thread 3 reaches `b` first).
            std::atomic<int> turn{0};
            auto in_turn = [&turn](int t, auto&& step) {
                while (turn.load(std::memory_order_acquire) != t) {  // pairs with the store below
                    std::this_thread::yield();
                }
                step();
                turn.store(t + 1, std::memory_order_release);
            };
            std::vector<std::jthread> pushers;
            pushers.reserve(threads);
            for (int k = 0; k < threads; ++k) {
                pushers.emplace_back([&, k] {
                    const auto ki = static_cast<std::size_t>(k);
                    in_turn(k, [&] {
                        pushed_a[ki] = a.try_emplace(int{k});
                        home_a[ki] = a.home_shard();
                    });
                    in_turn(2 * threads - 1 - k, [&] {
                        pushed_b[ki] = b.try_emplace(100 + k);
                        home_b[ki] = b.home_shard();
                    });
                });
            }
        }  // joins
        CHECK(pushed_a == all_accepted);
        CHECK(pushed_b == all_accepted);
        CHECK(home_a == std::vector<std::size_t>{0, 1, 2, 0});
        CHECK(home_b == std::vector<std::size_t>{3, 2, 1, 0});

        // Each element is in its pusher's home ring (all have room), so a pop from home i takes
        // ring i's head: ring 0 of `a` holds 0 then 3, ring 1 holds 1, ring 2 holds 2.
        CHECK(pop_from(a, 2, 1) == std::vector<int>{2});
        CHECK(pop_from(a, 1, 1) == std::vector<int>{1});
        CHECK(pop_from(a, 0, 2) == std::vector<int>{0, 3});
        CHECK_FALSE(a.has_claimed_elements());
        for (std::size_t ring = 0; ring < 4; ++ring) {  // ring i of `b`: thread 3 - i's element
            CAPTURE(ring);
            CHECK(pop_from(b, ring, 1) == std::vector<int>{100 + 3 - static_cast<int>(ring)});
        }
        CHECK_FALSE(b.has_claimed_elements());
    }
}

TEST_CASE("a thread keeps its home in each of the eight queues it pushed to most recently, and "
          "takes the next home in a queue it comes back to after pushing to more",
          "[sharded_queue][home][unit]") {
    static_assert(workerpool::detail::home_cache::size == 8, "the values below assume 8");
    // q[0] .. q[7]: eight rings each, and i other threads take homes in q[i] first, so the thread
    // below gets home i in q[i]. q[8]: three rings, two homes taken first: its home there is 2.
    queue_list q;
    for (std::size_t i = 0; i < 8; ++i) {
        q.push_back(std::make_unique<sharded_queue<int>>(128, 8));
        take_homes(*q.back(), i);
    }
    q.push_back(std::make_unique<sharded_queue<int>>(48, 3));
    take_homes(*q.back(), 2);

    // The queues one new thread pushes to, in order, and its home in each right after the push.
    const std::vector<std::size_t> visits{
        0, 1, 2, 3, 4, 5, 6, 7,     // eight queues, three rounds: it keeps its homes
        0, 1, 2, 3, 4, 5, 6, 7,     //
        0, 1, 2, 3, 4, 5, 6, 7,     //
        8, 0, 1, 2, 3, 4, 5, 6, 7,  // nine in turn, three rounds: each push forgets the
        8, 0, 1, 2, 3, 4, 5, 6, 7,  // least recently used queue, which is the next one
        8, 0, 1, 2, 3, 4, 5, 6, 7,  // visited
        0, 1, 2, 3, 4, 5, 6, 7,     // eight again, two rounds: it keeps its (new) homes
        0, 1, 2, 3, 4, 5, 6, 7};
    const std::vector<std::size_t> expected{
        0, 1, 2, 3, 4, 5, 6, 7,  //
        0, 1, 2, 3, 4, 5, 6, 7,  //
        0, 1, 2, 3, 4, 5, 6, 7,  //
        // q[8] takes its next home (2) and makes the thread forget q[0]; back at q[0] it takes
        // q[0]'s next home (1) and forgets q[1], which gives it its next (2), and so on: each
        // queue's home moves one on (mod its ring count) at each visit.
        2, 1, 2, 3, 4, 5, 6, 7, 0,  //
        0, 2, 3, 4, 5, 6, 7, 0, 1,  //
        1, 3, 4, 5, 6, 7, 0, 1, 2,  //
        // The last eight pushes went to q[0] .. q[7]: those homes stay.
        3, 4, 5, 6, 7, 0, 1, 2,  //
        3, 4, 5, 6, 7, 0, 1, 2};
    REQUIRE(visits.size() == expected.size());

    const visit_report seen = visit_on_new_thread(q, visits);
    CHECK(seen.pushed == std::vector<submit_status>(visits.size(), submit_status::accepted));
    CHECK(seen.homes == expected);
    check_rings(q, visits, expected);  // each push landed in the home it was made from
}

TEST_CASE("a thread keeps its home in a queue it pushes to between its pushes to any number of "
          "other queues: the least recently used queue is forgotten, not the oldest",
          "[sharded_queue][home][unit]") {
    static_assert(workerpool::detail::home_cache::size == 8, "the values below assume 8");
    // A queue a thread uses all the time (a pool it submits to between everything else) must not
    // lose its home there, or the thread's elements would land in two rings and could come out
    // of order. q[0] is that queue: three rings, one home taken first, so the thread's home there
    // is 1 (a new home would be 2). q[1] .. q[10]: ten other queues of two rings each, more than
    // the cache holds beside q[0]; the thread gets home 0 in each (a new home would be 1).
    queue_list q;
    q.push_back(std::make_unique<sharded_queue<int>>(96, 3));
    take_homes(*q.back(), 1);
    for (std::size_t i = 1; i <= 10; ++i) {
        q.push_back(std::make_unique<sharded_queue<int>>(8, 2));
    }

    const std::vector<std::size_t> visits{
        0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10,  // q[0] between each other
        0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10,  // twice round
        0};
    const std::vector<std::size_t> expected{
        // q[0] keeps home 1 throughout. (With the oldest entry evicted, as in a round-robin
        // cache, the push to q[8] would have forgotten q[0], entered first, and the next push to
        // q[0] would have taken home 2 there.) The others take home 0 on their first visit ...
        1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,  //
        // ... and, nine other queues later, have been forgotten: each takes its next home, 1.
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,  //
        1};
    REQUIRE(visits.size() == expected.size());

    const visit_report seen = visit_on_new_thread(q, visits);
    CHECK(seen.pushed == std::vector<submit_status>(visits.size(), submit_status::accepted));
    CHECK(seen.homes == expected);
    // In particular all 21 pushes to q[0] are in ring 1 and come out in push order.
    check_rings(q, visits, expected);
}

TEST_CASE("in a one-shard queue every thread's home is 0, and pushing to it costs a thread none of "
          "its homes in other queues",
          "[sharded_queue][home][unit]") {
    sharded_queue<int> one{4, 1};
    CHECK(one.home_shard() == 0u);
    std::vector<std::size_t> homes(3, 99);
    for (std::size_t i = 0; i < homes.size(); ++i) {
        on_new_thread([&, i] {
            static_cast<void>(one.try_emplace(static_cast<int>(i)));
            homes[i] = one.home_shard();
        });
    }
    CHECK(homes == std::vector<std::size_t>(3, 0));
    CHECK(one.home_shard() == 0u);
    CHECK(sorted(drain(one)) == iota(0, 3));

    // A push to a one-shard queue does not look up a home, so it takes no place among the eight
    // queues a thread remembers: a thread with homes in eight queues keeps them all. (Had the push
    // taken a place, q[0], the least recently used, would be forgotten and give the thread its
    // next home there: 0.)
    std::vector<std::unique_ptr<sharded_queue<int>>> q;
    for (std::size_t i = 0; i < workerpool::detail::home_cache::size; ++i) {
        q.push_back(std::make_unique<sharded_queue<int>>(8, 2));
        take_homes(*q.back(), 1);  // so the thread below gets home 1 in each
    }
    std::vector<std::size_t> before(q.size(), 99);
    std::vector<std::size_t> after(q.size(), 99);
    std::vector<submit_status> pushed_one(2, submit_status::closed);
    on_new_thread([&] {
        for (std::size_t i = 0; i < q.size(); ++i) {
            static_cast<void>(q[i]->try_emplace(static_cast<int>(i)));
            before[i] = q[i]->home_shard();
        }
        for (submit_status& s : pushed_one) {
            s = one.try_emplace(7);
        }
        for (std::size_t i = 0; i < q.size(); ++i) {
            after[i] = q[i]->home_shard();
        }
    });
    CHECK(before == std::vector<std::size_t>(q.size(), 1));
    CHECK(after == before);
    CHECK(pushed_one == std::vector<submit_status>(2, submit_status::accepted));
}
