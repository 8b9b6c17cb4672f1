// Stress of bounded_queue on its own: several producers and consumers on small and large rings
// (capacity 1 included), with a close() racing the pushes. Every accepted element must be popped
// exactly once, each producer's elements must reach each consumer in the order they were pushed
// (one at a time or in bulks),
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
#include <new>
#include <random>
#include <thread>
#include <utility>
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

struct stress_params {
    std::uint64_t scale;
    std::uint64_t seed;
};

// Reads the scale and the seed, and prints them so that a failing run can be repeated.
stress_params read_params(const char* what) {
    const std::uint64_t scale = std::max<std::uint64_t>(1, env_u64("WORKERPOOL_STRESS_SCALE", 1));
    const std::uint64_t seed = env_u64("WORKERPOOL_STRESS_SEED", std::random_device{}());
    std::printf("[stress] %s: WORKERPOOL_STRESS_SEED=%llu WORKERPOOL_STRESS_SCALE=%llu\n", what,
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(scale));
    std::fflush(stdout);
    return {scale, seed};
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

// One adapter per queue: the calls the stress body makes, and which of the checks apply to it.
class bounded_adapter {
public:
    // One ring: each producer's elements reach each consumer in the order they were pushed.
    static constexpr bool keeps_producer_order = true;
    static constexpr bool checks_close_accounting = false;

    explicit bounded_adapter(std::size_t capacity) : q_(capacity) {}
    [[nodiscard]] submit_status push(tracked&& t) noexcept { return q_.try_push(std::move(t)); }
    template <class Make>
    [[nodiscard]] auto push_bulk(std::size_t n, Make&& make) noexcept {
        return q_.try_emplace_bulk(n, std::forward<Make>(make));
    }
    template <class F>
    [[nodiscard]] bool pop(std::size_t /*consumer*/, F&& f) noexcept {
        return q_.consume(std::forward<F>(f));
    }
    std::uint64_t close() noexcept { return q_.close(); }
    [[nodiscard]] std::size_t approx_size() const noexcept { return q_.approx_size(); }
    [[nodiscard]] bool has_claimed_elements() const noexcept { return q_.has_claimed_elements(); }

private:
    bounded_queue<tracked> q_;
};

class sharded_adapter {
public:
    // No order across rings, so none is checked.
    static constexpr bool keeps_producer_order = false;
    // Closed stays closed (a refused element is refused again), and pushed_count() == close().
    static constexpr bool checks_close_accounting = true;

    sharded_adapter(std::size_t capacity, std::size_t shards) : q_(capacity, shards) {}
    [[nodiscard]] submit_status push(tracked&& t) noexcept { return q_.try_emplace(std::move(t)); }
    template <class Make>
    [[nodiscard]] auto push_bulk(std::size_t n, Make&& make) noexcept {
        return q_.try_emplace_bulk(n, std::forward<Make>(make));
    }
    template <class F>
    [[nodiscard]] bool pop(std::size_t consumer, F&& f) noexcept {
        return q_.consume(consumer, std::forward<F>(f));
    }
    std::uint64_t close() noexcept { return q_.close(); }
    [[nodiscard]] std::size_t approx_size() const noexcept { return q_.approx_size(); }
    [[nodiscard]] bool has_claimed_elements() const noexcept { return q_.has_claimed_elements(); }
    [[nodiscard]] std::uint64_t pushed_count() const noexcept { return q_.pushed_count(); }

private:
    sharded_queue<tracked> q_;
};

// One producer's pushes in bulks of 1 to 7 (`try_emplace_bulk`), each element built in its slot;
// returns how many went in. A bulk that met a closed queue is tried again: closed stays closed.
template <class Queue>
int push_in_bulks(Queue& q, int producer, int count, std::atomic<std::uint64_t>& pushed,
                  int& not_closed_after_closed) {
    int n = 0;
    while (n < count) {
        const auto want = static_cast<std::size_t>(std::min(count - n, 1 + n % 7));
        const auto r = q.push_bulk(want, [&](std::size_t k, void* where) noexcept {
            ::new (where) tracked{pack(producer, n + static_cast<int>(k))};
        });
        n += static_cast<int>(r.accepted);
        pushed.fetch_add(r.accepted, std::memory_order_relaxed);
        if (r.closed) {
            for (int again = 0; again < 4; ++again) {
                const auto after = q.push_bulk(1, [&](std::size_t, void* where) noexcept {
                    ::new (where) tracked{pack(producer, n)};
                });
                not_closed_after_closed += after.accepted != 0 || !after.closed ? 1 : 0;
                n += static_cast<int>(after.accepted);
            }
            break;
        }
        if (r.accepted == 0) {
            std::this_thread::yield();
        }
    }
    return n;
}

// One round on one queue shape: draws producers, consumers and close_early from rng (in that
// order, so that a printed seed gives the same rounds), runs them against a Queue built from
// queue_args, and checks that every accepted element was popped exactly once. With `bulk`, the
// producers push with try_emplace_bulk.
template <class Queue, class... QueueArgs>
void run_round(std::mt19937_64& rng, std::uint64_t scale, bool bulk, QueueArgs... queue_args) {
    const int producers = 1 + static_cast<int>(rng() % 4);
    const int consumers = 1 + static_cast<int>(rng() % 4);
    const int per_producer =
        static_cast<int>(std::min<std::uint64_t>((1u << producer_shift) - 1, 8'000 * scale));
    const bool close_early = rng() % 2 == 0;  // close while producers still push
    CAPTURE(producers, consumers, per_producer, close_early);
    tracked::reset();
    std::vector<std::vector<int>> popped(static_cast<std::size_t>(consumers));
    std::vector<int> accepted(static_cast<std::size_t>(producers), 0);
    // Pushes that a producer retried after it had seen closed and that were not refused.
    std::vector<int> not_closed_after_closed(static_cast<std::size_t>(producers), 0);
    std::uint64_t close_count = 0;
    {
        Queue q(queue_args...);
        std::atomic<int> producers_left{producers};
        std::atomic<std::uint64_t> pushed{0};
        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                const auto pi = static_cast<std::size_t>(p);
                if (bulk) {
                    accepted[pi] =
                        push_in_bulks(q, p, per_producer, pushed, not_closed_after_closed[pi]);
                    producers_left.fetch_sub(1, std::memory_order_release);
                    return;
                }
                int n = 0;
                for (int i = 0; i < per_producer; ++i) {
                    tracked t{pack(p, i)};
                    submit_status s;
                    while ((s = q.push(std::move(t))) == submit_status::full) {
                        std::this_thread::yield();
                    }
                    if (s == submit_status::closed) {
                        if constexpr (Queue::checks_close_accounting) {
                            // Closed stays closed: the refused element (untouched) must be
                            // refused again.
                            for (int again = 0; again < 4 && s == submit_status::closed; ++again) {
                                s = q.push(std::move(t));
                                not_closed_after_closed[pi] += s != submit_status::closed ? 1 : 0;
                            }
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
                        q.pop(static_cast<std::size_t>(c), [&mine](tracked&& t) noexcept {
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
        if constexpr (Queue::checks_close_accounting) {
            CHECK(q.pushed_count() == close_count);
        }
        tracked extra{pack(0, 0)};
        CHECK(q.push(std::move(extra)) == submit_status::closed);
        CHECK_FALSE(extra.moved_from);  // NOLINT(bugprone-use-after-move): refused
    }
    std::uint64_t total_accepted = 0;
    for (int n : accepted) {
        total_accepted += static_cast<std::uint64_t>(n);
    }
    CHECK(close_count == total_accepted);
    if constexpr (Queue::checks_close_accounting) {
        CHECK(not_closed_after_closed == std::vector<int>(static_cast<std::size_t>(producers), 0));
    }

    // Exactly once, and (where the queue keeps it) per producer in order within each consumer's
    // stream.
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
    if constexpr (Queue::keeps_producer_order) {
        CHECK(out_of_order == 0u);
    }
    CHECK(missing == 0u);
    CHECK(total_popped == total_accepted);
    CHECK(tracked::live.load() == 0);
    CHECK(tracked::misuse.load() == 0);
}

}  // namespace

TEST_CASE("bounded_queue under many producers and consumers delivers each element once, in "
          "each producer's order, and closes cleanly",
          "[stress][bounded_queue]") {
    const bool bulk = GENERATE(false, true);  // single pushes, or try_emplace_bulk
    const stress_params params = read_params(bulk ? "bounded_queue, bulk" : "bounded_queue");
    std::mt19937_64 rng(params.seed);

    const std::size_t capacities[] = {1, 2, 3, 7, 64, 1000};
    for (const std::size_t capacity : capacities) {
        CAPTURE(capacity);
        run_round<bounded_adapter>(rng, params.scale, bulk, capacity);
    }
}

TEST_CASE("sharded_queue under many producers and consumers delivers each accepted element once, "
          "and close() counts exactly those",
          "[stress][sharded_queue]") {
    const bool bulk = GENERATE(false, true);  // single pushes, or try_emplace_bulk
    const stress_params params = read_params(bulk ? "sharded_queue, bulk" : "sharded_queue");
    std::mt19937_64 rng(params.seed);

    struct shape {
        std::size_t capacity;
        std::size_t shards;
    };
    // Rings of one slot, rings of unequal size, and one ring (the bounded_queue fast path).
    const shape shapes[] = {{1, 1}, {2, 2}, {3, 2}, {7, 3}, {8, 8}, {64, 4}, {1000, 6}};
    for (const shape& sh : shapes) {
        CAPTURE(sh.capacity, sh.shards);
        run_round<sharded_adapter>(rng, params.scale, bulk, sh.capacity, sh.shards);
    }
}
