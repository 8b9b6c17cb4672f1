#pragma once

/// @file
/// `detail::callbacks`: the one guarded way the pool runs user code (callbacks, the retry rule,
/// the scaling policy), and the assembly and delivery of `event`s.

#include <workerpool/stats.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// Runs user code so that nothing it throws escapes a pool thread: what it throws is swallowed and
/// counted (`stats().callback_errors`). Delivers events to `options::on_event`, at once or, for
/// events found while holding a lock of the pool, later (`defer`, then `flush` outside it).
///
/// Thread safety: every member from any thread.
class callbacks {
public:
    /// Delivers events to `on_event` (which outlives this object; empty: events cost nothing).
    explicit callbacks(const std::function<void(const event&)>& on_event) noexcept
        : on_event_(on_event) {}

    /// Calls `f(args...)`; returns whether it returned normally.
    template <class F, class... Args>
    bool guard(F& f, Args&&... args) noexcept {
        try {
            f(std::forward<Args>(args)...);
            return true;
        } catch (...) {
            errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            return false;
        }
    }

    /// Calls `f(args...)` and returns its result, or `fallback` if it throws.
    template <class R, class F, class... Args>
    R guard_or(R fallback, F& f, Args&&... args) noexcept {
        try {
            return f(std::forward<Args>(args)...);
        } catch (...) {
            errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            return fallback;
        }
    }

    /// Whether anyone listens for events.
    [[nodiscard]] bool wanted() const noexcept { return static_cast<bool>(on_event_); }

    /// Delivers `e` now.
    void emit(const event& e) noexcept {
        if (wanted()) {
            guard(on_event_, e);
        }
    }

    /// Keeps `e` for the next `flush` (the caller holds a lock that user code must not run
    /// under). If there is no memory to keep it, it is lost (events are reports, not work).
    void defer(const event& e) noexcept {
        if (!wanted()) {
            return;
        }
        try {
            std::lock_guard lock(pending_mutex_);
            pending_.push_back(e);
        } catch (...) {
            // out of memory: drop the report
        }
    }

    /// Delivers the events kept by `defer`, in order.
    void flush() noexcept {
        std::vector<event> events;
        {
            std::lock_guard lock(pending_mutex_);
            if (pending_.empty()) {
                return;
            }
            events.swap(pending_);
        }
        for (const event& e : events) {
            emit(e);
        }
    }

    /// Exceptions swallowed so far.
    [[nodiscard]] std::uint64_t errors() const noexcept {
        return errors_.load(std::memory_order_relaxed);  // statistics only
    }

    /// An event of `kind` noticed now.
    [[nodiscard]] static event make(event_kind kind, const char* reason, std::size_t workers_before,
                                    std::size_t workers_after, std::size_t queue_depth,
                                    unsigned attempts = 0) noexcept {
        return event{.kind = kind,
                     .when = std::chrono::steady_clock::now(),
                     .workers_before = workers_before,
                     .workers_after = workers_after,
                     .queue_depth = queue_depth,
                     .attempts = attempts,
                     .reason = reason};
    }

private:
    const std::function<void(const event&)>& on_event_;
    std::atomic<std::uint64_t> errors_{0};  // statistics only
    std::mutex pending_mutex_;
    std::vector<event> pending_;  // guarded by pending_mutex_
};

}  // namespace workerpool::detail
