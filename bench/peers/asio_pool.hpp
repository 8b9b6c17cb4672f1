#pragma once

// Peer: Boost.Asio's thread_pool with post(). Unbounded; bounded through bounded_gate when the
// benchmark asks for a capacity.

#include "../support.hpp"
#include "bounded_gate.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

namespace workerpool_bench {

template <class Handler>
class asio_pool {
public:
    static constexpr const char* name = "asio";

    asio_pool(pool_config config, Handler handler)
        : handler_(handler), gate_(config.capacity), pool_(config.workers) {}
    asio_pool(const asio_pool&) = delete;
    asio_pool& operator=(const asio_pool&) = delete;

    /// Waits for all posted work (join() without stop() drains), then joins the threads.
    ~asio_pool() { pool_.join(); }

    void submit(job j) {
        gate_.acquire();
        boost::asio::post(pool_, [this, h = handler_, j]() mutable {
            gate_.release();
            h(j);  // the last touch of anything the benchmark owns
        });
    }

private:
    Handler handler_;
    bounded_gate gate_;
    boost::asio::thread_pool pool_;  // last: its threads stop before gate_ goes away
};

}  // namespace workerpool_bench
