// Stress of bounded_queue on its own: several producers and consumers on small and large rings
// (capacity 1 included), with a close() racing the pushes. Every accepted element must be popped
// exactly once, each producer's elements must reach each consumer in the order they were pushed,
// and no element may be leaked or destroyed twice. The same for detail::sharded_queue (1 to 8
// rings), less the order, which a push that spills into another ring does not keep.
//
// Size: WORKERPOOL_STRESS_SCALE (default 1). Seed: WORKERPOOL_STRESS_SEED (printed).

#include <workerpool/bounded_queue.hpp>
#include <workerpool/detail/sharded_queue.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

namespace {

using workerpool::bounded_queue;
using workerpool::submit_status;
using workerpool::detail::sharded_queue;
using workerpool::test::tracked;

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') {
        return fallback;
    }
    return std::strtoull(v, nullptr, 0);
}

// An element: which producer pushed it and its sequence number there, packed into tracked::id
// (producer in the top 4 bits; up to 2^27 elements per producer).
constexpr int producer_shift = 27;

int pack(int producer, int seq) {
    return (producer << producer_shift) | seq;
}
int producer_of(int id) {
    return id >> producer_shift;
}
int seq_of(int id) {
    return id & ((1 << producer_shift) - 1);
}

}  // namespace

TEST_CASE("bounded_queue under many producers and consumers delivers each element once, in "
          "each producer's order, and closes cleanly",
          "[stress][bounded_queue]") {
    const std::uint64_t scale = std::max<std::uint64_t>(1, env_u64("WORKERPOOL_STRESS_SCALE", 1));
    const std::uint64_t seed = env_u64("WORKERPOOL_STRESS_SEED", std::random_device{}());
    std::printf(
        "[stress] bounded_queue: WORKERPOOL_STRESS_SEED=%llu WORKERPOOL_STRESS_SCALE=%llu\n",
        static_cast<unsigned long long>(seed), static_cast<unsigned long long>(scale));
    std::fflush(stdout);
    std::mt19937_64 rng(seed);

    const std::size_t capacities[] = {1, 2, 3, 7, 64, 1000};
    for (const std::size_t capacity : capacities) {
        const int producers = 1 + static_cast<int>(rng() % 4);
        const int consumers = 1 + static_cast<int>(rng() % 4);
        const int per_producer =
            static_cast<int>(std::min<std::uint64_t>((1u << producer_shift) - 1, 8'000 * scale));
        const bool close_early = rng() % 2 == 0;  // close while producers still push
        CAPTURE(capacity, producers, consumers, per_producer, close_early);
        tracked::reset();
        std::vector<std::vector<int>> popped(static_cast<std::size_t>(consumers));
        std::vector<int> accepted(static_cast<std::size_t>(producers), 0);
        std::uint64_t close_count = 0;
        {
            bounded_queue<tracked> q(capacity);
            std::atomic<int> producers_left{producers};
            std::atomic<std::uint64_t> pushed{0};
            std::vector<std::thread> threads;
            for (int p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    int n = 0;
                    for (int i = 0; i < per_producer; ++i) {
                        tracked t{pack(p, i)};
                        submit_status s;
                        while ((s = q.try_push(std::move(t))) == submit_status::full) {
                            std::this_thread::yield();
                        }
                        if (s == submit_status::closed) {
                            break;  // a refused element stays with us and is destroyed here
                        }
                        ++n;
                        pushed.fetch_add(1, std::memory_order_relaxed);
                    }
                    accepted[static_cast<std::size_t>(p)] = n;
                    producers_left.fetch_sub(1, std::memory_order_release);
                });
            }
            for (int c = 0; c < consumers; ++c) {
                threads.emplace_back([&, c] {
                    auto& mine = popped[static_cast<std::size_t>(c)];
                    for (;;) {
                        const bool got = q.consume([&mine](tracked&& t) noexcept {
                            mine.push_back(t.moved_from ? -1 : t.id);
                        });
                        if (got) {
                            continue;
                        }
                        // acquire: the producers' last pushes are visible once they are all done.
                        if (producers_left.load(std::memory_order_acquire) == 0 &&
                            !q.has_claimed_elements()) {
                            return;
                        }
                        std::this_thread::yield();
                    }
                });
            }
            if (close_early) {
                const std::uint64_t at = static_cast<std::uint64_t>(producers) *
                                         static_cast<std::uint64_t>(per_producer) / 2;
                while (pushed.load(std::memory_order_relaxed) < at &&
                       producers_left.load(std::memory_order_relaxed) != 0) {
                    std::this_thread::yield();
                }
                close_count = q.close();
            }
            for (auto& t : threads) {
                t.join();
            }
            if (!close_early) {
                close_count = q.close();
            }
            CHECK(q.approx_size() == 0u);
            tracked extra{pack(0, 0)};
            CHECK(q.try_push(std::move(extra)) == submit_status::closed);
            CHECK_FALSE(extra.moved_from);
        }
        std::uint64_t total_accepted = 0;
        for (int n : accepted) {
            total_accepted += static_cast<std::uint64_t>(n);
        }
        CHECK(close_count == total_accepted);

        // Exactly once, and per producer in order within each consumer's stream.
        std::vector<std::vector<std::uint8_t>> seen(static_cast<std::size_t>(producers));
        for (int p = 0; p < producers; ++p) {
            seen[static_cast<std::size_t>(p)].assign(static_cast<std::size_t>(per_producer), 0);
        }
        std::size_t bad = 0, duplicates = 0, out_of_order = 0, total_popped = 0;
        for (const auto& stream : popped) {
            std::vector<int> last(static_cast<std::size_t>(producers), -1);
            for (int id : stream) {
                ++total_popped;
                if (id < 0 || producer_of(id) >= producers || seq_of(id) >= per_producer) {
                    ++bad;
                    continue;
                }
                const auto p = static_cast<std::size_t>(producer_of(id));
                auto& flag = seen[p][static_cast<std::size_t>(seq_of(id))];
                duplicates += flag != 0 ? 1u : 0u;
                flag = 1;
                out_of_order += seq_of(id) <= last[p] ? 1u : 0u;
                last[p] = seq_of(id);
            }
        }
        std::size_t missing = 0;
        for (int p = 0; p < producers; ++p) {
            for (int i = 0; i < accepted[static_cast<std::size_t>(p)]; ++i) {
                missing +=
                    seen[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)] == 0 ? 1u : 0u;
            }
        }
        CHECK(bad == 0u);
        CHECK(duplicates == 0u);
        CHECK(out_of_order == 0u);
        CHECK(missing == 0u);
        CHECK(total_popped == total_accepted);
        CHECK(tracked::live.load() == 0);
        CHECK(tracked::misuse.load() == 0);
    }
}

TEST_CASE("sharded_queue under many producers and consumers delivers each accepted element once, "
          "and close() counts exactly those",
          "[stress][sharded_queue]") {
    const std::uint64_t scale = std::max<std::uint64_t>(1, env_u64("WORKERPOOL_STRESS_SCALE", 1));
    const std::uint64_t seed = env_u64("WORKERPOOL_STRESS_SEED", std::random_device{}());
    std::printf(
        "[stress] sharded_queue: WORKERPOOL_STRESS_SEED=%llu WORKERPOOL_STRESS_SCALE=%llu\n",
        static_cast<unsigned long long>(seed), static_cast<unsigned long long>(scale));
    std::fflush(stdout);
    std::mt19937_64 rng(seed);

    struct shape {
        std::size_t capacity;
        std::size_t shards;
    };
    // Rings of one slot, rings of unequal size, and one ring (the bounded_queue fast path).
    const shape shapes[] = {{1, 1}, {2, 2}, {3, 2}, {7, 3}, {8, 8}, {64, 4}, {1000, 6}};
    for (const shape& sh : shapes) {
        const int producers = 1 + static_cast<int>(rng() % 4);
        const int consumers = 1 + static_cast<int>(rng() % 4);
        const int per_producer =
            static_cast<int>(std::min<std::uint64_t>((1u << producer_shift) - 1, 8'000 * scale));
        const bool close_early = rng() % 2 == 0;  // close while producers still push
        CAPTURE(sh.capacity, sh.shards, producers, consumers, per_producer, close_early);
        tracked::reset();
        std::vector<std::vector<int>> popped(static_cast<std::size_t>(consumers));
        std::vector<int> accepted(static_cast<std::size_t>(producers), 0);
        // Pushes that a producer retried after it had seen closed and that were not refused.
        std::vector<int> not_closed_after_closed(static_cast<std::size_t>(producers), 0);
        std::uint64_t close_count = 0;
        {
            sharded_queue<tracked> q(sh.capacity, sh.shards);
            std::atomic<int> producers_left{producers};
            std::atomic<std::uint64_t> pushed{0};
            std::vector<std::thread> threads;
            for (int p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    const auto pi = static_cast<std::size_t>(p);
                    int n = 0;
                    for (int i = 0; i < per_producer; ++i) {
                        tracked t{pack(p, i)};
                        submit_status s;
                        while ((s = q.try_emplace(std::move(t))) == submit_status::full) {
                            std::this_thread::yield();
                        }
                        if (s == submit_status::closed) {
                            // Closed stays closed: the refused element (untouched) must be
                            // refused again.
                            for (int again = 0; again < 4 && s == submit_status::closed; ++again) {
                                s = q.try_emplace(std::move(t));
                                not_closed_after_closed[pi] += s != submit_status::closed ? 1 : 0;
                            }
                            if (s != submit_status::accepted) {
                                break;  // a refused element stays with us and is destroyed here
                            }
                        }
                        ++n;
                        pushed.fetch_add(1, std::memory_order_relaxed);
                    }
                    accepted[pi] = n;
                    producers_left.fetch_sub(1, std::memory_order_release);
                });
            }
            for (int c = 0; c < consumers; ++c) {
                threads.emplace_back([&, c] {
                    auto& mine = popped[static_cast<std::size_t>(c)];
                    for (;;) {
                        const bool got =
                            q.consume(static_cast<std::size_t>(c), [&mine](tracked&& t) noexcept {
                                mine.push_back(t.moved_from ? -1 : t.id);
                            });
                        if (got) {
                            continue;
                        }
                        // acquire: the producers' last pushes are visible once they are all done.
                        if (producers_left.load(std::memory_order_acquire) == 0 &&
                            !q.has_claimed_elements()) {
                            return;
                        }
                        std::this_thread::yield();
                    }
                });
            }
            if (close_early) {
                const std::uint64_t at = static_cast<std::uint64_t>(producers) *
                                         static_cast<std::uint64_t>(per_producer) / 2;
                while (pushed.load(std::memory_order_relaxed) < at &&
                       producers_left.load(std::memory_order_relaxed) != 0) {
                    std::this_thread::yield();
                }
                close_count = q.close();
            }
            for (auto& t : threads) {
                t.join();
            }
            if (!close_early) {
                close_count = q.close();
            }
            CHECK(q.approx_size() == 0u);
            CHECK(q.pushed_count() == close_count);
            tracked extra{pack(0, 0)};
            CHECK(q.try_emplace(std::move(extra)) == submit_status::closed);
            CHECK_FALSE(extra.moved_from);  // NOLINT(bugprone-use-after-move): refused
        }
        std::uint64_t total_accepted = 0;
        for (int n : accepted) {
            total_accepted += static_cast<std::uint64_t>(n);
        }
        CHECK(close_count == total_accepted);
        CHECK(not_closed_after_closed == std::vector<int>(static_cast<std::size_t>(producers), 0));

        // Exactly once; no order across rings, so none is checked.
        std::vector<std::vector<std::uint8_t>> seen(static_cast<std::size_t>(producers));
        for (int p = 0; p < producers; ++p) {
            seen[static_cast<std::size_t>(p)].assign(static_cast<std::size_t>(per_producer), 0);
        }
        std::size_t bad = 0, duplicates = 0, total_popped = 0;
        for (const auto& stream : popped) {
            for (int id : stream) {
                ++total_popped;
                if (id < 0 || producer_of(id) >= producers || seq_of(id) >= per_producer) {
                    ++bad;
                    continue;
                }
                auto& flag = seen[static_cast<std::size_t>(producer_of(id))]
                                 [static_cast<std::size_t>(seq_of(id))];
                duplicates += flag != 0 ? 1u : 0u;
                flag = 1;
            }
        }
        std::size_t missing = 0;
        for (int p = 0; p < producers; ++p) {
            for (int i = 0; i < accepted[static_cast<std::size_t>(p)]; ++i) {
                missing +=
                    seen[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)] == 0 ? 1u : 0u;
            }
        }
        CHECK(bad == 0u);
        CHECK(duplicates == 0u);
        CHECK(missing == 0u);
        CHECK(total_popped == total_accepted);
        CHECK(tracked::live.load() == 0);
        CHECK(tracked::misuse.load() == 0);
    }
}
