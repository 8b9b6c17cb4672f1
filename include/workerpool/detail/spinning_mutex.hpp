#pragma once

/// @file
/// `detail::spinning_mutex`: a lock for short sections taken by several threads per request (the
/// scheduler's): it polls before it sleeps.

#include <workerpool/detail/cache_line.hpp>

#include <mutex>

namespace workerpool::detail {

/// The scheduler's lock: a `std::mutex` that polls briefly before it sleeps. Its sections are a
/// few container operations (a bulk submit's, up to 64 requests moved in), so a contender (a
/// producer and the workers all take it once or twice per request) usually gets it within the
/// poll, without the futex sleep and wake-up a plain `std::mutex` pays under contention.
class spinning_mutex {
public:
    /// Takes the lock: up to 128 tries with a pause between them, then a blocking lock.
    void lock() {
        constexpr int tries = 128;
        for (int i = 0; i < tries; ++i) {
            if (m_.try_lock()) {
                return;
            }
            cpu_relax();
        }
        m_.lock();
    }
    /// Takes the lock if it is free.
    bool try_lock() noexcept { return m_.try_lock(); }
    /// Releases the lock.
    void unlock() noexcept { m_.unlock(); }

private:
    std::mutex m_;
};

}  // namespace workerpool::detail
