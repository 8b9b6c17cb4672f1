#pragma once

/// @file
/// `detail::delay_queue<Envelope>`: requests that must not run before a time — retries waiting
/// out their backoff — and their way back into the queue when due, or to the caller at shutdown.

#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/status.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// The retry delay queue. A request in it holds no worker and no ring slot.
///
/// Releasing: whoever releases (the supervisor when a retry falls due, a worker after a pop while
/// retries wait for room) moves every due request into the queue, earliest first. A request is
/// never dropped: when the queue is full with requests still due, they wait for room, and this
/// queue counts itself as a waiter in `back_pressure` ([R1] with [W3]), so that the next pop
/// releases them instead of anyone polling a full queue.
///
/// A tracked request is watched while it waits (`completion_slot::watch`): its cancel tells the
/// listener given at construction, and the supervisor's next pass takes it out
/// (`purge_cancelled`), as the scheduler's are.
///
/// Thread safety: every member from any thread; one mutex guards the map, the handed-back list
/// and the room-wait flag's changes.
template <class Envelope>
class delay_queue {
public:
    /// A delay queue whose waiting tracked requests tell `cancels` (null: nobody; it must outlive
    /// this object) of a cancel.
    explicit delay_queue(cancel_listener* cancels = nullptr) noexcept : cancels_(cancels) {}

    delay_queue(const delay_queue&) = delete;
    delay_queue& operator=(const delay_queue&) = delete;
    delay_queue(delay_queue&&) = delete;
    delay_queue& operator=(delay_queue&&) = delete;

    /// What still waits (out of memory at shutdown) is no longer watched.
    ~delay_queue() {
        for (auto& [due, e] : entries_) {
            unwatch(e);
        }
    }

    /// What `schedule` did with a request.
    enum class scheduled {
        queued,              ///< it waits for its due time
        queued_behind_room,  ///< it waits, and due requests wait for room: the pops release it
        handed_back,         ///< shutdown has begun: kept for the shutdown report
    };

    /// What a release did.
    struct released {
        std::size_t pushed = 0;  ///< requests moved into the queue
        /// When the next request falls due; "never" when none does, when the due ones wait for
        /// room (the pops release them), or when the queue is closed (shutdown collects them).
        std::int64_t next_due = std::numeric_limits<std::int64_t>::max();
    };

    /// Adds `e`, due at `due_ns`, or keeps it for the shutdown report once `life` is draining.
    /// Throws: `std::bad_alloc`, with `e` untouched.
    scheduled schedule(std::int64_t due_ns, Envelope&& e, const lifecycle& life) {
        std::lock_guard lock(mutex_);
        if (life.at_least(phase::draining)) {
            handed_back_.push_back(std::move(e));
            return scheduled::handed_back;
        }
        Envelope& kept = entries_.emplace(due_ns, std::move(e))->second;
        if (cancels_ != nullptr && kept.ticket != nullptr) {
            kept.ticket->watch(*cancels_);
        }
        pending_.fetch_add(1, std::memory_order_relaxed);  // statistics and scaling only
        // relaxed: guarded by mutex_
        return room_awaited_.load(std::memory_order_relaxed) ? scheduled::queued_behind_room
                                                             : scheduled::queued;
    }

    /// The supervisor's pass: moves the requests due at `now_ns` into `queue`.
    template <class Queue>
    released release_due(std::int64_t now_ns, Queue& queue, back_pressure& bp) noexcept {
        std::lock_guard lock(mutex_);
        return release_locked(now_ns, queue, bp);
    }

    /// A consumer's pass after its pop freed a slot while due requests waited for room; nothing
    /// if they no longer wait (another pass released them).
    template <class Queue>
    std::optional<released> release_into_room(std::int64_t now_ns, Queue& queue,
                                              back_pressure& bp) noexcept {
        std::lock_guard lock(mutex_);
        if (!room_awaited_.load(std::memory_order_relaxed)) {  // guarded by mutex_
            return std::nullopt;
        }
        return release_locked(now_ns, queue, bp);
    }

    /// Whether due requests wait for room. Read by a consumer after its [W3] load saw a waiter:
    /// [R1] relaxed, ordered by that load (it read `count_waiter`'s release, or an RMW after it).
    [[nodiscard]] bool room_awaited() const noexcept {
        // [R1] relaxed: ordered by the [W3] load that saw a waiter
        return room_awaited_.load(std::memory_order_relaxed);
    }

    /// When the supervisor must wake for this queue: the earliest due time, or "never" while the
    /// due requests wait for room or `queue_closed`.
    [[nodiscard]] std::int64_t next_wake(bool queue_closed) const noexcept {
        std::lock_guard lock(mutex_);
        if (entries_.empty() || queue_closed ||
            room_awaited_.load(std::memory_order_relaxed)) {  // guarded by mutex_
            return std::numeric_limits<std::int64_t>::max();
        }
        return entries_.begin()->first;
    }

    /// Moves every waiting request into `out` (shutdown; `life` is draining already, so later
    /// ones are handed back) and ends a wait for room. Throws: `std::bad_alloc` (nothing moved).
    void close_into(std::vector<Envelope>& out, back_pressure& bp) {
        std::lock_guard lock(mutex_);
        out.reserve(out.size() + entries_.size());
        for (auto& [due, e] : entries_) {
            unwatch(e);
            out.push_back(std::move(e));
        }
        entries_.clear();
        pending_.store(0, std::memory_order_relaxed);  // statistics only
        end_room_wait_locked(bp);
    }

    /// The supervisor's pass after a cancel: moves into `out` each request whose handle cancelled
    /// it while it waited. Returns false when out of memory for `out` (call again later).
    bool purge_cancelled(std::vector<Envelope>& out) noexcept {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (auto& [due, e] : entries_) {
            n += cancelled(e) ? 1U : 0U;
        }
        try {
            out.reserve(out.size() + n);  // no throw below; a cancel since then waits its turn
        } catch (...) {
            return false;
        }
        for (auto it = entries_.begin(); it != entries_.end();) {
            if (!cancelled(it->second) || out.size() == out.capacity()) {
                ++it;
                continue;
            }
            unwatch(it->second);
            out.push_back(std::move(it->second));  // reserved: cannot throw
            it = entries_.erase(it);
            pending_.fetch_sub(1, std::memory_order_relaxed);  // statistics only
        }
        return true;
    }

    /// Moves the requests handed back since `close_into` into `out`. Throws: `std::bad_alloc`.
    void take_handed_back(std::vector<Envelope>& out) {
        std::lock_guard lock(mutex_);
        out.reserve(out.size() + handed_back_.size());
        for (Envelope& e : handed_back_) {
            out.push_back(std::move(e));
        }
        handed_back_.clear();
    }

    /// Pushes into `queue` that were not re-enqueued retries: the requests accepted by submit
    /// calls. Read with the re-enqueue count under one lock, so it never goes back.
    template <class Queue>
    [[nodiscard]] std::uint64_t submitted(const Queue& queue) const noexcept {
        std::lock_guard lock(mutex_);
        return queue.pushed_count() - requeued_;
    }

    /// Whether no request waits. Under the mutex: whoever schedules one reads the supervisor's
    /// rest flag after the insertion ([K1] through the mutex).
    [[nodiscard]] bool empty() const noexcept {
        std::lock_guard lock(mutex_);
        return entries_.empty();
    }

    /// Requests waiting, for statistics and the scaler.
    [[nodiscard]] std::size_t pending() const noexcept {
        return pending_.load(std::memory_order_relaxed);  // statistics only
    }

private:
    template <class Queue>
    released release_locked(std::int64_t now_ns, Queue& queue, back_pressure& bp) noexcept {
        released r;
        while (!entries_.empty()) {
            auto it = entries_.begin();
            if (it->first > now_ns) {
                r.next_due = it->first;
                break;
            }
            if (it->second.enqueued_ns != 0) {
                it->second.enqueued_ns = now_ns;  // sampled: its queue wait starts again now
            }
            // Unwatched before the push: a worker may pop it, end it and reuse its slot at once.
            completion_slot* const ticket = unwatch(it->second);
            const submit_status s = queue.try_emplace(std::move(it->second));
            if (s != submit_status::accepted && ticket != nullptr && cancels_ != nullptr) {
                ticket->watch(*cancels_);  // it waits on (a cancel meanwhile: told at once)
            }
            if (s == submit_status::closed) {
                return r;  // shutdown collects what is left
            }
            if (s == submit_status::full) {
                if (!room_awaited_.load(std::memory_order_relaxed)) {  // guarded by mutex_
                    // [R1] relaxed store, published by count_waiter's release (seq_cst) RMW.
                    room_awaited_.store(true, std::memory_order_relaxed);
                    bp.count_waiter();
                }
                // Full after we were counted: a later pop sees the count and releases them.
                if (queue.free_slots() == 0) {
                    return r;
                }
                // A pop freed a slot and may have looked before we were counted: its consumer is
                // still moving the element out, or a producer takes the slot first. Try again.
                std::this_thread::yield();
                continue;
            }
            ++requeued_;
            pending_.fetch_sub(1, std::memory_order_relaxed);  // statistics only
            entries_.erase(it);
            ++r.pushed;
        }
        end_room_wait_locked(bp);  // nothing due waits any more
        return r;
    }

    // Whether `e` is a watched tracked request its handle cancelled.
    [[nodiscard]] bool cancelled(const Envelope& e) const noexcept {
        return cancels_ != nullptr && e.ticket != nullptr && e.ticket->done();
    }

    // Stops watching `e` (if tracked); returns its ticket.
    completion_slot* unwatch(Envelope& e) const noexcept {
        if (cancels_ != nullptr && e.ticket != nullptr) {
            e.ticket->unwatch();
        }
        return e.ticket;
    }

    void end_room_wait_locked(back_pressure& bp) noexcept {
        if (room_awaited_.load(std::memory_order_relaxed)) {        // guarded by mutex_
            room_awaited_.store(false, std::memory_order_relaxed);  // see [R1]
            bp.uncount_waiter();
        }
    }

    cancel_listener* const cancels_;  // told of a cancel of a waiting tracked request; may be null
    mutable std::mutex mutex_;
    std::multimap<std::int64_t, Envelope> entries_;  // guarded by mutex_; by due time
    std::vector<Envelope> handed_back_;              // guarded by mutex_; retries after close
    std::uint64_t requeued_ = 0;                     // guarded by mutex_; see submitted()
    std::atomic<std::size_t> pending_{0};            // entries_.size(), for statistics
    // Due requests wait for room (and this queue counts in back_pressure). Written under mutex_;
    // read without it after [W3]: see [R1].
    std::atomic<bool> room_awaited_{false};
};

}  // namespace workerpool::detail
