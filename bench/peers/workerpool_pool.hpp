#pragma once

// Our dispatcher behind the same adapter as the peers. Two flavours:
//   workerpool            default_timeout = 10 s: every attempt publishes a deadline for the
//                         supervisor ("the timeout wrapper on"); the handler takes the stop_token
//                         by const&.
//   workerpool_no_timeout default_timeout = 0: no deadline is published; plain handler(Request&).
//   workerpool_sharded    as `workerpool`, with the queue split into one ring per producer
//                         (options.queue_shards = producers, at most the workers).
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

inline void require_accepted(workerpool::submit_status s) {
    if (s != workerpool::submit_status::accepted) {
        die(std::string("dispatcher refused a blocking submit: ") + workerpool::to_string(s));
    }
}

template <class Pool>
void shutdown_and_check(Pool& pool) {
    static_cast<void>(pool.shutdown(std::chrono::seconds(30)));
    const workerpool::stats_snapshot s = pool.stats();
    if (s.completed != s.submitted || s.failed != 0) {
        die("dispatcher accounting after shutdown: submitted " + std::to_string(s.submitted) +
            ", completed " + std::to_string(s.completed) + ", failed " + std::to_string(s.failed));
    }
}

inline workerpool::options<job>
make_options(const pool_config& config, std::chrono::milliseconds timeout, std::size_t shards = 1) {
    workerpool::options<job> o;
    o.capacity = config.capacity == 0 ? natural_bounded_capacity() : config.capacity;
    o.queue_shards = std::min(shards, o.capacity);
    o.min_workers = config.workers;
    o.max_workers = config.workers;
    o.default_timeout = timeout;
    return o;
}

}  // namespace detail

template <class Handler>
class workerpool_pool {
public:
    static constexpr const char* name = "workerpool";

    workerpool_pool(pool_config config, Handler handler)
        : pool_([handler](job& j, const std::stop_token&) { handler(j); },
                detail::make_options(config, std::chrono::seconds(10))) {}

    /// Drains and joins through shutdown(), then checks completed == submitted.
    ~workerpool_pool() { detail::shutdown_and_check(pool_); }

    workerpool_pool(const workerpool_pool&) = delete;
    workerpool_pool& operator=(const workerpool_pool&) = delete;

    void submit(job j) { detail::require_accepted(pool_.submit(std::move(j))); }

private:
    workerpool::dispatcher<job> pool_;
};

template <class Handler>
class workerpool_no_timeout_pool {
public:
    static constexpr const char* name = "workerpool_no_timeout";

    workerpool_no_timeout_pool(pool_config config, Handler handler)
        : pool_([handler](job& j) { handler(j); },
                detail::make_options(config, std::chrono::milliseconds(0))) {}

    ~workerpool_no_timeout_pool() { detail::shutdown_and_check(pool_); }

    workerpool_no_timeout_pool(const workerpool_no_timeout_pool&) = delete;
    workerpool_no_timeout_pool& operator=(const workerpool_no_timeout_pool&) = delete;

    void submit(job j) { detail::require_accepted(pool_.submit(std::move(j))); }

private:
    workerpool::dispatcher<job> pool_;
};

template <class Handler>
class workerpool_sharded_pool {
public:
    static constexpr const char* name = "workerpool_sharded";

    workerpool_sharded_pool(pool_config config, Handler handler)
        : pool_(
              [handler](job& j, const std::stop_token&) { handler(j); },
              detail::make_options(config, std::chrono::seconds(10),
                                   std::clamp<std::size_t>(config.producers, 1, config.workers))) {}

    ~workerpool_sharded_pool() { detail::shutdown_and_check(pool_); }

    workerpool_sharded_pool(const workerpool_sharded_pool&) = delete;
    workerpool_sharded_pool& operator=(const workerpool_sharded_pool&) = delete;

    void submit(job j) { detail::require_accepted(pool_.submit(std::move(j))); }

private:
    workerpool::dispatcher<job> pool_;
};

}  // namespace workerpool_bench
