#pragma once

/// @file
/// `detail::idle_waiters`: the threads in `dispatcher::wait_idle`, and how a worker that ends a
/// request wakes them.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>

namespace workerpool::detail {

/// Threads waiting for the pool to become idle. A waiter polls a count of outstanding requests
/// and sleeps between polls; a worker that ends a request while anyone waits notifies them. The
/// waiter count is only a hint, so a notification may race with a registration: the sleep is
/// capped at 1 ms to cover that.
///
/// Thread safety: every member from any thread.
class idle_waiters {
public:
    /// Waits until `outstanding()` returns 0 (returns true) or `until` passes (returns false).
    template <class Outstanding>
    bool wait_until(std::optional<std::chrono::steady_clock::time_point> until,
                    Outstanding&& outstanding) {
        count_.fetch_add(1, std::memory_order_relaxed);  // a hint for workers; we also poll
        std::unique_lock lock(mutex_);
        bool idle = false;
        for (;;) {
            if (outstanding() == 0) {
                idle = true;
                break;
            }
            const auto now = std::chrono::steady_clock::now();
            if (until && now >= *until) {
                break;
            }
            const auto step = now + std::chrono::milliseconds(1);
            cv_.wait_until(lock, until ? std::min(step, *until) : step);
        }
        count_.fetch_sub(1, std::memory_order_relaxed);  // a hint, see above
        return idle;
    }

    /// Wakes the waiters, if there are any.
    void notify() noexcept {
        if (count_.load(std::memory_order_relaxed) != 0) {  // a hint; waiters also poll
            { std::lock_guard lock(mutex_); }
            cv_.notify_all();
        }
    }

private:
    std::atomic<std::size_t> count_{0};  // threads in wait_until; a hint
    std::mutex mutex_;
    std::condition_variable cv_;  // waiters sleep here
};

}  // namespace workerpool::detail
