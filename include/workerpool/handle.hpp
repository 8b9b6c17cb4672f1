#pragma once

/// @file
/// `handle<Result>`: one tracked request seen from outside the pool — its state, `cancel()`,
/// `wait()`, `get()` and `co_await` — and `tracked<Result>`, what a tracked submit returns.

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/completion.hpp>
#include <workerpool/status.hpp>

#include <chrono>
#include <coroutine>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace workerpool {

namespace detail {
struct handle_access;
}  // namespace detail

/// A tracked request (from `dispatcher::try_submit_tracked` and its siblings). Knows the request's
/// whole life: `state()` says where it is, `cancel()` stops it wherever it is, `wait()` and
/// `get()` block until it ends, and `co_await std::move(h)` resumes a coroutine when it ends.
///
/// Movable, not copyable. Destroying a handle neither waits for its request nor cancels it. A
/// handle may outlive its pool: the pool's destructor ends every request (handed back ones as
/// `cancelled`, see `dispatcher::~dispatcher`), and the handle then reports that end.
///
/// Waiting (`wait`, `get`) inside a handler of the same pool for another of its requests holds a
/// worker while it waits; when every worker waits so, nothing runs the requests they wait for:
/// `co_await` there instead, or submit the waiting part to another pool.
///
/// Thread safety: `state`, `cancel`, `wait*` from any thread, concurrently; `get` and `co_await`
/// consume the handle, so one thread at a time. Empty (`valid() == false`): default-constructed,
/// moved from, after `get()`, or from a submit that was not accepted.
template <class Result = void>
class handle {
public:
    /// The result type (`void`: nothing but success or failure).
    using result_type = Result;

    /// An empty handle.
    handle() noexcept = default;
    /// Takes `other`'s request; `other` is empty afterwards.
    handle(handle&& other) noexcept = default;
    /// Lets go of this handle's request (as the destructor does) and takes `other`'s.
    handle& operator=(handle&& other) noexcept {
        if (this != &other) {
            reset();
            slot_ = std::move(other.slot_);
        }
        return *this;
    }
    handle(const handle&) = delete;
    handle& operator=(const handle&) = delete;
    /// Lets go of the request: it goes on; its end is still counted by the pool.
    ~handle() { reset(); }

    /// Whether this handle refers to a request.
    [[nodiscard]] bool valid() const noexcept { return slot_ != nullptr; }

    /// Where the request is now. `running` covers a worker deciding its end; `succeeded`,
    /// `failed`, `cancelled` and `handed_back` are final. Pre: `valid()`.
    [[nodiscard]] request_state state() const noexcept { return slot_->state(); }

    /// Cancels the request. Queued or waiting out a retry: it never runs (again); it ends as
    /// `cancelled` now (waiters wake, a coroutine awaiting it resumes on this thread), and the
    /// pool hands it to `on_failure` as `cancelled` (counted in `stats().failed`): one that waits
    /// out a backoff, or in the scheduler for a time or behind its key, at once, on the
    /// supervisor's thread (this call wakes it; its key's next request moves up); one in the
    /// queue (or ready in the scheduler) when a worker takes it. Running: its attempt's token is
    /// stopped (stop callbacks run on this thread) and it is not retried; it ends as `cancelled`
    /// when its handler returns, whatever the handler does. Returns whether this call cancelled it:
    /// false when it had ended, was being ended, was cancelled already, or the handle is empty. The
    /// stop callbacks run under the request's own lock: they must not wait for this request.
    bool cancel() noexcept { return slot_ != nullptr && slot_->cancel(); }

    /// Blocks until the request has ended. Throws: `std::logic_error` on an empty handle.
    void wait() const { checked().wait(); }

    /// Blocks until the request has ended or `timeout` passed; returns whether it ended.
    /// Throws: `std::logic_error` on an empty handle.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
        slot_type& s = checked();
        if (const auto until = detail::end_of_wait(timeout)) {
            return s.wait_until(*until);
        }
        s.wait();  // as good as for ever
        return true;
    }

    /// Blocks until the request has ended or `deadline` passed; returns whether it ended.
    /// Throws: `std::logic_error` on an empty handle.
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
        return checked().wait_until(deadline);
    }

    /// Waits for the end, then returns the handler's result (moved out), or throws
    /// `request_failed` (state, reason, attempts, last error) when the request failed, was
    /// cancelled or handed back. The handle is empty afterwards, as a `std::future` is.
    /// Throws: also `std::logic_error` on an empty handle.
    Result get() {
        checked().wait();
        return take();
    }

    /// What `co_await std::move(h)` waits with.
    class awaiter {
    public:
        /// Takes the handle.
        explicit awaiter(handle&& h) noexcept : h_(std::move(h)) {}
        awaiter(const awaiter&) = delete;
        awaiter& operator=(const awaiter&) = delete;
        awaiter(awaiter&&) = delete;
        awaiter& operator=(awaiter&&) = delete;
        /// A coroutine destroyed while it waited is forgotten: nothing resumes it later.
        ~awaiter() {
            if (h_.slot_ && waiting_) {
                h_.slot_->forget_continuation(waiting_);
            }
        }
        /// Whether the request has ended (then the coroutine does not suspend).
        [[nodiscard]] bool await_ready() const noexcept { return h_.slot_->done(); }
        /// Stores `c` to be resumed when the request ends; false if it has ended meanwhile.
        bool await_suspend(std::coroutine_handle<> c) noexcept {
            waiting_ = c;
            return h_.slot_->set_continuation(c);
        }
        /// The result, or `request_failed`, as `get()`.
        Result await_resume() { return h_.take(); }

    private:
        handle h_;
        std::coroutine_handle<> waiting_;  // the coroutine suspended on it, if any
    };

    /// Suspends the awaiting coroutine until the request ends, then yields the result or throws
    /// `request_failed`, as `get()`. The coroutine resumes on the thread that ended the request:
    /// a pool worker (after `on_success` or `on_failure` ran), the thread that cancelled it while
    /// it waited (a group's cancel: once the group's sweep is over), or the thread running
    /// `shutdown()` or the destructor; a coroutine type of the user's may move on elsewhere from
    /// there. Code resumed on a worker runs as the pool's own: a `submit` from it does not block
    /// on a full queue; it must not destroy the pool, nor wait there (a group's destructor
    /// waits) for requests that need that worker. A coroutine destroyed while it waits is
    /// forgotten, never resumed. Throws: `std::logic_error` on an empty handle.
    awaiter operator co_await() && {
        (void)checked();
        return awaiter(std::move(*this));
    }

private:
    friend struct detail::handle_access;
    using slot_type = detail::completion<Result>;

    explicit handle(std::shared_ptr<slot_type> slot) noexcept : slot_(std::move(slot)) {}

    slot_type& checked() const {
        if (!slot_) {
            throw std::logic_error("workerpool::handle: empty (a submit that was not accepted, a "
                                   "moved-from handle, or get() already called)");
        }
        return *slot_;
    }

    void reset() noexcept {
        if (slot_) {
            slot_->release();
            slot_.reset();
        }
    }

    // Pre: the request ended. Empties the handle.
    Result take() {
        struct let_go {
            std::shared_ptr<slot_type> s;
            explicit let_go(std::shared_ptr<slot_type> p) noexcept : s(std::move(p)) {}
            let_go(const let_go&) = delete;
            let_go& operator=(const let_go&) = delete;
            let_go(let_go&&) = delete;
            let_go& operator=(let_go&&) = delete;
            ~let_go() { s->release(); }
        } keep(std::move(slot_));
        slot_type& s = *keep.s;
        const request_state end = s.state();
        if (end != request_state::succeeded) {
            throw request_failed(end, s.reason(), s.attempts(), s.error());
        }
        if constexpr (std::is_void_v<Result>) {
            return;
        } else {
            return s.take_value();
        }
    }

    std::shared_ptr<slot_type> slot_;  // shares the slab's ownership; points at the slot
};

/// What a tracked submit returns: the status, as the plain submit's, and the request's handle,
/// which is empty unless `status == accepted` (the request is then untouched, as with a plain
/// submit). Usable with structured bindings: `auto [status, h] = pool.try_submit_tracked(...)`.
template <class Result = void>
struct tracked {
    submit_status status = submit_status::closed;  ///< As the plain submit call's.
    ::workerpool::handle<Result> handle;           ///< Valid when accepted.
};

namespace detail {

/// Makes handles (for the dispatcher and `request_group`).
struct handle_access {
    template <class Result>
    [[nodiscard]] static handle<Result> make(std::shared_ptr<completion<Result>> slot) noexcept {
        return handle<Result>(std::move(slot));
    }

    /// Another owner of `h`'s slot (the caller takes over one of the slot's references).
    template <class Result>
    [[nodiscard]] static std::shared_ptr<completion<Result>>
    slot(const handle<Result>& h) noexcept {
        return h.slot_;
    }
};

}  // namespace detail

}  // namespace workerpool
