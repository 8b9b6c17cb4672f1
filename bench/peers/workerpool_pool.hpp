#pragma once

// Our dispatcher behind the same adapter as the peers. Five flavours:
//   workerpool            default options (the queue's ring count picked by queue_shards = 0)
//                         with default_timeout = 10 s: every attempt publishes a deadline for the
//                         supervisor ("the timeout wrapper on"); the handler takes the stop_token
//                         by const&.
//   workerpool_by_value   as `workerpool`, with a handler that takes the std::stop_token by value,
//                         as a std::jthread user writes it.
//   workerpool_no_timeout as `workerpool` with default_timeout = 0: no deadline is published;
//                         plain handler(Request&).
//   workerpool_fifo       as `workerpool` with queue_shards = 1: one ring, strict FIFO order.
//   workerpool_sharded    as `workerpool`, with one ring per producer (queue_shards = producers,
//                         at most the workers), as a user who knows the load would set it; or
//                         WORKERPOOL_BENCH_SHARDS rings when that is set.
// min_workers == max_workers, so the scaler never changes the worker count during a benchmark.

#include <workerpool/workerpool.hpp>

#include "../support.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <stop_token>
#include <string>

namespace workerpool_bench {

namespace detail {

enum class flavour { timeout, token_by_value, no_timeout, fifo, sharded };

/// The dispatcher configured as flavour `F`; submit blocks when full, the destructor drains
/// through shutdown() and checks completed == submitted.
template <class Handler, flavour F>
class dispatcher_pool {
public:
    static constexpr const char* name = F == flavour::timeout          ? "workerpool"
                                        : F == flavour::token_by_value ? "workerpool_by_value"
                                        : F == flavour::no_timeout     ? "workerpool_no_timeout"
                                        : F == flavour::fifo           ? "workerpool_fifo"
                                                                       : "workerpool_sharded";

    dispatcher_pool(pool_config config, Handler handler)
        : pool_(make_handler(std::move(handler)), make_options(config)) {}

    ~dispatcher_pool() {
        static_cast<void>(pool_.shutdown(std::chrono::seconds(30)));
        const workerpool::stats_snapshot s = pool_.stats();
        if (s.completed != s.submitted || s.failed != 0) {
            die("dispatcher accounting after shutdown: submitted " + std::to_string(s.submitted) +
                ", completed " + std::to_string(s.completed) + ", failed " +
                std::to_string(s.failed));
        }
    }

    dispatcher_pool(const dispatcher_pool&) = delete;
    dispatcher_pool& operator=(const dispatcher_pool&) = delete;

    void submit(job j) {
        const workerpool::submit_status s = pool_.submit(std::move(j));
        if (s != workerpool::submit_status::accepted) {
            die(std::string("dispatcher refused a blocking submit: ") + workerpool::to_string(s));
        }
    }

    /// The options of flavour `F` for `config`.
    static workerpool::options<job> make_options(const pool_config& config) {
        workerpool::options<job> o;
        o.capacity = config.capacity == 0 ? natural_bounded_capacity() : config.capacity;
        o.min_workers = config.workers;
        o.max_workers = config.workers;
        if constexpr (F != flavour::no_timeout) {
            o.default_timeout = std::chrono::seconds(10);
        }
        if constexpr (F == flavour::fifo) {
            o.queue_shards = 1;
        }
        if constexpr (F == flavour::sharded) {
            // WORKERPOOL_BENCH_SHARDS=k fixes the ring count (to try other settings on a
            // many-core machine); 0, the default, gives one ring per producer.
            const auto fixed = static_cast<std::size_t>(env_knob("WORKERPOOL_BENCH_SHARDS", 0));
            const std::size_t wanted =
                fixed != 0 ? fixed : std::clamp<std::size_t>(config.producers, 1, config.workers);
            o.queue_shards = std::min(wanted, o.capacity);
        }
        return o;
    }

private:
    static auto make_handler(Handler handler) {
        if constexpr (F == flavour::no_timeout) {
            return [handler](job& j) { handler(j); };
        } else if constexpr (F == flavour::token_by_value) {
            // By value on purpose: a copy of the token per call is what this flavour measures.
            return [handler](job& j, std::stop_token) { handler(j); };
        } else {
            return [handler](job& j, const std::stop_token&) { handler(j); };
        }
    }

    workerpool::dispatcher<job> pool_;
};

}  // namespace detail

/// The options of bench_pool's `workerpool` (default options, default_timeout = 10 s) with
/// `workers` workers, for the benchmarks that build the dispatcher themselves.
inline workerpool::options<job> workerpool_options(unsigned workers) {
    return detail::dispatcher_pool<void (*)(job&), detail::flavour::timeout>::make_options(
        pool_config{workers});
}

template <class Handler>
using workerpool_pool = detail::dispatcher_pool<Handler, detail::flavour::timeout>;
template <class Handler>
using workerpool_by_value_pool = detail::dispatcher_pool<Handler, detail::flavour::token_by_value>;
template <class Handler>
using workerpool_no_timeout_pool = detail::dispatcher_pool<Handler, detail::flavour::no_timeout>;
template <class Handler>
using workerpool_fifo_pool = detail::dispatcher_pool<Handler, detail::flavour::fifo>;
template <class Handler>
using workerpool_sharded_pool = detail::dispatcher_pool<Handler, detail::flavour::sharded>;

}  // namespace workerpool_bench
