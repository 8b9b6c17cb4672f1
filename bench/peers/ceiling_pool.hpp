#pragma once

// The ceiling: the dispatcher's queue moving the dispatcher's requests with no pool around it.
// The queue is the one `workerpool` (default options) builds: a `detail::sharded_queue` of
// `detail::envelope<job>` with `auto_queue_shards(capacity, workers)` rings, each envelope built
// as a submit with `default_timeout = 10 s` builds it. Producers push (spinning while the queue is
// full); `workers` consumer threads pop, each from its own ring, every 32nd pop starting at
// another ring, each in turn, as the dispatcher's workers do when there are as many as rings, and
// call the handler inline. Nothing sleeps, nothing is counted, nothing is timed, no stop_token is
// passed: what a pool adds on top of this is its own cost. A thread with nothing to do pauses 64
// times, then yields the core between polls (a yield is not a sleep: it only lets a thread that
// shares the core run), so on a machine with fewer cores than threads the spinning side does not
// hold a core for a whole time slice.
//
// Consumers spin whenever they are idle, so only the throughput benchmarks run it: a wake-up
// latency or an idle-CPU figure of a spinning pool would say nothing about a pool.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/sharded_queue.hpp>
#include <workerpool/options.hpp>

#include "../support.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

namespace workerpool_bench {

template <class Handler>
class ceiling_pool {
public:
    static constexpr const char* name = "ceiling";
    static constexpr bool throughput_only = true;  // see the file's comment

    ceiling_pool(pool_config config, Handler handler)
        : handler_(handler),
          queue_(capacity_of(config),
                 workerpool::auto_queue_shards(capacity_of(config), config.workers)),
          settings_(workerpool::detail::request_settings::of({}, std::chrono::seconds(10), 1)) {
        for (unsigned i = 0; i < config.workers; ++i) {
            consumers_.emplace_back([this, i] { consume_loop(i); });
        }
    }
    ceiling_pool(const ceiling_pool&) = delete;
    ceiling_pool& operator=(const ceiling_pool&) = delete;

    /// Raises the stop flag; each consumer returns once it finds the queue empty after seeing it.
    ~ceiling_pool() {
        // [BC1] publishes every push; pairs with [BC2]
        stop_.store(true, std::memory_order_release);
        for (auto& t : consumers_) {
            t.join();
        }
    }

    /// Pushes `j`, spinning while the queue is full.
    void submit(job j) {
        unsigned polls = 0;
        for (;;) {
            // The queue moves from `j` only when it accepts.
            const workerpool::submit_status s = queue_.try_emplace(std::move(j), settings_, 0);
            if (s == workerpool::submit_status::accepted) {
                return;
            }
            if (s == workerpool::submit_status::closed) {
                die("ceiling: the queue is closed");
            }
            pause_or_yield(polls);
        }
    }

private:
    using envelope = workerpool::detail::envelope<job>;

    static std::size_t capacity_of(const pool_config& config) {
        return config.capacity == 0 ? natural_bounded_capacity() : config.capacity;
    }

    // 64 pauses, then a yield per poll until the caller resets `polls`.
    static void pause_or_yield(unsigned& polls) noexcept {
        if (polls < 64) {
            ++polls;
            workerpool::detail::cpu_relax();
        } else {
            std::this_thread::yield();
        }
    }

    void consume_loop(unsigned index) {
        constexpr unsigned pops_per_visit = 32;  // as the dispatcher's workers
        const std::size_t rings = queue_.shard_count();
        const std::size_t home = index % rings;
        std::size_t visit = home;
        std::size_t from = home;
        unsigned pops_here = 0;
        unsigned polls = 0;
        std::optional<envelope> current;
        for (;;) {
            if (queue_.consume(
                    from, [&current](envelope&& e) noexcept { current.emplace(std::move(e)); })) {
                from = home;
                if (++pops_here == pops_per_visit) {
                    pops_here = 0;
                    visit = visit + 1 == rings ? 0 : visit + 1;
                    if (visit == home) {
                        visit = visit + 1 == rings ? 0 : visit + 1;
                    }
                    from = visit;
                }
                handler_(current->request);
                current.reset();
                polls = 0;
                continue;
            }
            // [BC2] sees every push made before [BC1]: once the queue is empty, it stays so.
            if (stop_.load(std::memory_order_acquire) && !queue_.has_claimed_elements()) {
                return;
            }
            pause_or_yield(polls);
        }
    }

    Handler handler_;
    workerpool::detail::sharded_queue<envelope> queue_;
    const workerpool::detail::request_settings settings_;  // what every push carries
    alignas(cache_line) std::atomic<bool> stop_{false};    // [BC1]/[BC2]
    std::vector<std::thread> consumers_;                   // last: started after the queue exists
};

}  // namespace workerpool_bench
