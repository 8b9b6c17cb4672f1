#pragma once

/// @file
/// `request_group<Request, Result>`: requests submitted together, waited for together, cancelled
/// together — and with `group_options::cancel_on_failure`, given up together when one fails.

#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/usage_checks.hpp>
#include <workerpool/dispatcher.hpp>
#include <workerpool/handle.hpp>
#include <workerpool/options.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace workerpool {

/// How a `request_group` behaves.
struct group_options {
    /// When a request of the group fails (it reaches `on_failure` as failed: attempts exhausted,
    /// timed out, expired), cancel every other request of the group, and every one submitted to
    /// it later.
    bool cancel_on_failure = false;
};

/// A set of tracked requests of one pool: submit through the group, then `wait()` for all of
/// them, `cancel()` all of them, or read how many succeeded, failed or were cancelled.
///
/// A request belongs to the group from the submit that accepted it until the pool lets go of
/// it: after its handler, its `on_success` or `on_failure` ran, or after shutdown handed it back.
/// `wait()` waits for that, so when it returns no code of the group's requests runs any more.
/// The destructor waits too (as `std::jthread`'s joins): references that the requests hold stay
/// valid until it returns. Destroy the group before its pool, or at least do not submit to it
/// after the pool's destruction began.
///
/// Each submit returns a `tracked<Result>` whose handle works as the pool's own; the group keeps
/// its own reference, so dropping the handle does not take the request out of the group.
///
/// Thread safety: every member from any thread, concurrently; not from one of the group's own
/// requests' handlers or callbacks for `wait` (it would wait for itself).
template <class Request, class Result>  // Result defaults to void (dispatcher.hpp)
class request_group final : private detail::group_link, public detail::lvalue_submits<Request> {
public:
    // A submit given a `Request` lvalue fails to compile with a message that says to pass
    // `std::move(request)`, as the pool's own calls do.
    using detail::lvalue_submits<Request>::try_submit;
    using detail::lvalue_submits<Request>::submit;
    using detail::lvalue_submits<Request>::submit_for;

    /// A group of `pool`'s requests, behaving as `o` says.
    explicit request_group(dispatcher<Request, Result>& pool, group_options o = {})
        : pool_(pool), options_(o) {}

    request_group(const request_group&) = delete;             ///< Not copyable.
    request_group& operator=(const request_group&) = delete;  ///< Not copy-assignable.
    request_group(request_group&&) = delete;             ///< Not movable: its requests point at it.
    request_group& operator=(request_group&&) = delete;  ///< Not move-assignable.

    /// Waits for every request of the group (see `wait`), then lets go of them.
    ~request_group() override {
        wait();
        std::lock_guard lock(mutex_);
        for (member& m : members_) {
            m->release();
        }
    }

    /// As `dispatcher::try_submit_tracked`, the request joining the group.
    /// Throws: `std::bad_alloc` (the group's list, or a new chunk of completion slots).
    tracked<Result> try_submit(Request&& r, job_options jo = {}) {
        return join([&](detail::group_link* g) { return pool_.tracked_in(g, r, jo, false); });
    }

    /// As `dispatcher::submit_tracked`, the request joining the group. Blocks: while full.
    tracked<Result> submit(Request&& r, job_options jo = {}) {
        return join([&](detail::group_link* g) { return pool_.tracked_in(g, r, jo, true); });
    }

    /// As `dispatcher::submit_for_tracked`, the request joining the group. Blocks: up to
    /// `timeout`.
    template <class Rep, class Period>
    tracked<Result> submit_for(Request&& r, std::chrono::duration<Rep, Period> timeout,
                               job_options jo = {}) {
        return join([&](detail::group_link* g) {
            return pool_.tracked_in(g, r, jo, true, detail::end_of_wait(timeout));
        });
    }

    /// Blocks until the pool has let go of every request the group accepted.
    void wait() const {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [this] { return outstanding_ == 0; });
    }

    /// As `wait()`, for at most `timeout`; returns whether every request was let go of.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
        std::unique_lock lock(mutex_);
        return done_.wait_for(lock, timeout, [this] { return outstanding_ == 0; });
    }

    /// Cancels every request of the group that has not ended (as `handle::cancel`), and every one
    /// submitted to it from now on. Stop callbacks, and coroutines awaiting a request cancelled
    /// while it waited, run on this thread.
    void cancel() noexcept {
        {
            std::lock_guard lock(mutex_);
            if (cancelled_all_) {
                return;
            }
            cancelled_all_ = true;
            ++sweeping_;
        }
        sweep(false);
    }

    /// Whether `cancel()` was called or (with `cancel_on_failure`) a request failed.
    [[nodiscard]] bool cancelled() const {
        std::lock_guard lock(mutex_);
        return cancelled_all_;
    }

    /// Requests of the group that ended `succeeded` so far.
    [[nodiscard]] std::size_t succeeded_count() const { return count(request_state::succeeded); }
    /// Requests of the group that ended `failed` so far.
    [[nodiscard]] std::size_t failed_count() const { return count(request_state::failed); }
    /// Requests of the group that ended `cancelled` so far.
    [[nodiscard]] std::size_t cancelled_count() const { return count(request_state::cancelled); }
    /// Requests of the group that shutdown handed back so far.
    [[nodiscard]] std::size_t handed_back_count() const {
        return count(request_state::handed_back);
    }
    /// Requests the group accepted that the pool has not let go of yet.
    [[nodiscard]] std::size_t outstanding() const {
        std::lock_guard lock(mutex_);
        return outstanding_;
    }

private:
    using slot = detail::completion<Result>;
    using member = std::shared_ptr<slot>;   // holds one of the slot's references
    static constexpr std::size_t ends = 7;  // request_state values

    template <class Submit>
    tracked<Result> join(Submit&& submit) {
        {
            std::lock_guard lock(mutex_);
            // The only allocation here, before the push: room for this member and every other
            // join in progress, so that the push_back below cannot throw.
            const std::size_t needed = members_.size() + joining_ + 1;
            if (needed > members_.capacity()) {
                members_.reserve(std::max<std::size_t>(needed, 2 * members_.capacity()));
            }
            if (members_.capacity() > resume_.capacity()) {
                resume_.reserve(members_.capacity());  // one coroutine per member at most
            }
            ++joining_;
            ++outstanding_;  // before the push: its end may come before we are back
        }
        tracked<Result> t;
        try {
            t = submit(static_cast<detail::group_link*>(this));
        } catch (...) {
            std::lock_guard lock(mutex_);
            --joining_;
            end_one_locked();
            throw;
        }
        bool cancel_now = false;
        {
            std::lock_guard lock(mutex_);
            --joining_;
            if (t.status != submit_status::accepted) {
                end_one_locked();
                return t;
            }
            members_.push_back(detail::handle_access::slot(t.handle));  // reserved above
            cancel_now = cancelled_all_;
            compact_locked();
        }
        if (cancel_now) {
            (void)t.handle.cancel();
        }
        return t;
    }

    void ended(detail::completion_slot& /*slot*/, request_state final) noexcept override {
        {
            std::lock_guard lock(mutex_);
            ++ended_[static_cast<std::size_t>(final)];
            if (final != request_state::failed || !options_.cancel_on_failure || cancelled_all_) {
                end_one_locked();
                return;
            }
            cancelled_all_ = true;
            ++sweeping_;
        }
        // This request still counts as outstanding: the group outlives the sweep, and the sweep
        // resumes the coroutines it woke only once it ended this request and let go of the group.
        sweep(true);
    }

    // Cancels the members one at a time, outside the lock (a cancel runs user code: stop
    // callbacks), then lets go of the group (`sweeping_`, and with `end_one` the request whose
    // failure started the sweep), and only then resumes the coroutines of requests it cancelled
    // while they waited: one of them may destroy the group, so `this` is not touched after.
    // Pre: `sweeping_` counts this sweep; at most one sweep runs (`cancelled_all_` gates it).
    void sweep(bool end_one) noexcept {
        for (std::size_t i = 0;; ++i) {
            member m;
            {
                std::lock_guard lock(mutex_);
                if (i >= members_.size()) {
                    break;
                }
                m = members_[i];  // no compaction while `sweeping_`: indices stay
            }
            std::coroutine_handle<> c;
            (void)m->cancel(c);
            if (c) {
                std::lock_guard lock(mutex_);
                resume_.push_back(c);  // reserved in join: one per member at most
            }
        }
        std::vector<std::coroutine_handle<>> resume;  // takes resume_'s buffer: no allocation
        {
            std::lock_guard lock(mutex_);
            resume.swap(resume_);
            --sweeping_;
            if (end_one) {
                end_one_locked();
            }
        }
        for (const std::coroutine_handle<> c : resume) {
            try {
                c.resume();
            } catch (...) {
                // A coroutine type that lets exceptions out of resume(): nowhere to report it.
            }
        }
    }

    void end_one_locked() noexcept {
        if (--outstanding_ == 0) {
            done_.notify_all();
        }
    }

    // Drops members that have ended, once they are most of the list, so a long-lived group's
    // list stays proportional to its live requests.
    void compact_locked() noexcept {
        if (sweeping_ != 0 || members_.size() < 64 || members_.size() < 2 * outstanding_) {
            return;
        }
        std::size_t kept = 0;
        for (member& m : members_) {
            if (m->done()) {
                m->release();
                m.reset();
            } else {
                if (&members_[kept] != &m) {
                    members_[kept] = std::move(m);
                }
                ++kept;
            }
        }
        members_.resize(kept);
    }

    [[nodiscard]] std::size_t count(request_state s) const {
        std::lock_guard lock(mutex_);
        return ended_[static_cast<std::size_t>(s)];
    }

    dispatcher<Request, Result>& pool_;
    const group_options options_;
    mutable std::mutex mutex_;
    mutable std::condition_variable done_;
    std::vector<member> members_;  // guarded by mutex_
    // Coroutines a sweep woke, resumed at its end; room for one per member. Guarded by mutex_.
    std::vector<std::coroutine_handle<>> resume_;
    std::size_t outstanding_ = 0;  // guarded by mutex_
    std::size_t joining_ = 0;      // guarded by mutex_: joins between reserve and push_back
    std::size_t sweeping_ = 0;     // guarded by mutex_: sweeps in progress
    bool cancelled_all_ = false;   // guarded by mutex_
    std::array<std::size_t, ends> ended_{};  // guarded by mutex_: by final state
};

}  // namespace workerpool
