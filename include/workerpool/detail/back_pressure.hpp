#pragma once

/// @file
/// `detail::back_pressure`: producers that found the queue full — their short wait for a batch of
/// free slots, their sleep, the wake-up that the pops give them — and the count of submit calls
/// still inside the pool, which the destructor waits out.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/spin.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>

namespace workerpool::detail {

/// Who waits for room in the queue, and how they are woken.
///
/// The waiters' count is one side of the Dekker pair [W3]: a waiter counts itself, then looks for
/// a free slot; a consumer pops (a seq_cst CAS), then loads the count (`waiting`). One of the two
/// sees the other, so a freed slot is never missed by every waiter. Besides blocked producers,
/// the delay queue counts itself here while due retries wait for room (`count_waiter`).
///
/// Thread safety: every member from any thread.
class back_pressure {
public:
    /// Counts a submit call from its first wait for a slot until it returns, so that the
    /// destructor can wait for a producer it woke to leave the call before the members it touches
    /// are destroyed. The fast path (a slot free at once) is not counted: a call that has not
    /// waited cannot be "blocked when the destructor began".
    class inside_call {
    public:
        inside_call() = default;
        inside_call(const inside_call&) = delete;
        inside_call& operator=(const inside_call&) = delete;
        inside_call(inside_call&&) = delete;
        inside_call& operator=(inside_call&&) = delete;
        ~inside_call() {
            if (count_ != nullptr) {
                // [P1] the call's last access to the pool: publishes all of them; pairs with [P2].
                count_->fetch_sub(1, std::memory_order_release);
            }
        }
        /// Starts counting (once) in `bp`.
        void enter(back_pressure& bp) noexcept {
            if (count_ == nullptr) {
                // [P0] seq_cst: with the queue's seq_cst close and the destructor's seq_cst load
                // [P2], a call the destructor does not count entered its wait after intake
                // closed, i.e. it was made on an object already being destroyed.
                bp.inside_.fetch_add(1, std::memory_order_seq_cst);
                count_ = &bp.inside_;
            }
        }

    private:
        std::atomic<std::size_t>* count_ = nullptr;
    };

    /// A blocking submit: `push()` until it does not return `full`, polling for room for up to
    /// `spin_ns` and then sleeping between tries, until `until` passes. `self_call` (a thread of
    /// the pool itself) never waits: it gets `full` at once rather than wait for a slot only its
    /// own pool could free. Counted in the destructor's wait from its first wait (see
    /// `inside_call`). Returns `accepted`, `closed`, or `full` (out of time, or a self-call).
    template <class Queue, class Push>
    submit_status
    submit_until(Queue& queue, Push&& push, bool self_call, std::int64_t spin_ns,
                 std::optional<std::chrono::steady_clock::time_point> until) noexcept {
        const submit_status s = push();
        return s == submit_status::full ? retry_until(queue, push, self_call, spin_ns, until) : s;
    }

    /// `submit_until` after a first `push()` found the queue full: the waits and the tries after
    /// them. A caller that makes the first try itself keeps this (the spin's set-up, the
    /// destructor's count) off its fast path.
    template <class Queue, class Push>
    submit_status retry_until(Queue& queue, Push&& push, bool self_call, std::int64_t spin_ns,
                              std::optional<std::chrono::steady_clock::time_point> until) noexcept {
        inside_call inside;
        for (;;) {
            if (self_call || (until && std::chrono::steady_clock::now() >= *until)) {
                return submit_status::full;
            }
            inside.enter(*this);  // from here on the destructor waits for us
            if (!spin_for_room(queue, spin_ns) && !wait_for_room(queue, until)) {
                return queue.is_closed() ? submit_status::closed : submit_status::full;
            }
            const submit_status s = push();
            if (s != submit_status::full) {
                return s;
            }
        }
    }

    /// Polls for room for up to `spin_ns` before a producer sleeps. For the first few microseconds
    /// (a quarter of `spin_ns`, 10 us at most) it waits for a batch of free slots in the
    /// producer's home ring — a quarter of the ring, at most 64 — rather than one: refilling each
    /// slot as soon as it frees keeps the producer and the workers in lockstep on the same cache
    /// lines. It watches the batch's last slot (`has_room_for`), not the workers' index, so its
    /// polling does not slow the pops it waits for. After that any free slot will do. Returns
    /// whether a slot may be free (or the queue closed).
    template <class Queue>
    bool spin_for_room(Queue& queue, std::int64_t spin_ns) noexcept {
        const auto& home = queue.home_ring();
        const std::size_t batch =
            std::max<std::size_t>(1, std::min<std::size_t>(64, home.capacity() / 4));
        const std::int64_t batch_wait_ns = std::min<std::int64_t>(spin_ns / 4, 10'000);
        bool want_batch = batch > 1;
        std::int64_t batch_until = 0;
        return spin_until(spin_ns, [&](bool slow_check) {
            if (queue.is_closed()) {
                return true;
            }
            if (!want_batch) {
                return queue.free_slots() != 0;
            }
            if (home.has_room_for(batch)) {
                return true;
            }
            if (slow_check) {
                const std::int64_t now = now_ns();
                if (batch_until == 0) {
                    batch_until = add_saturated(now, batch_wait_ns);
                } else if (now >= batch_until) {
                    want_batch = false;
                }
            }
            return false;
        });
    }

    /// Sleeps until a slot may be free, the queue closed, or `until` passed. Returns false if the
    /// time ran out with the queue still full and open.
    template <class Queue>
    bool wait_for_room(Queue& queue,
                       std::optional<std::chrono::steady_clock::time_point> until) noexcept {
        std::unique_lock lock(mutex_);
        // [W3] seq_cst: count first, then look at the free slots (the producer's side).
        blocked_.fetch_add(1, std::memory_order_seq_cst);
        wake_pending_.store(false, std::memory_order_seq_cst);  // let the next pop notify us
        bool ok = true;
        while (queue.free_slots() == 0 && !queue.is_closed()) {
            if (until) {
                if (cv_.wait_until(lock, *until) == std::cv_status::timeout) {
                    ok = queue.free_slots() != 0 || queue.is_closed();
                    break;
                }
            } else {
                cv_.wait(lock);
            }
            wake_pending_.store(false, std::memory_order_seq_cst);
        }
        blocked_.fetch_sub(1, std::memory_order_relaxed);  // only a hint for consumers
        return ok;
    }

    /// Whether anyone waits for room: the consumer's side of [W3], after its pop.
    [[nodiscard]] bool waiting() const noexcept {
        // [W3] [R1] the consumer's load: also sees what a waiter published with its count.
        return blocked_.load(std::memory_order_seq_cst) != 0;
    }

    /// A consumer's pop freed a slot while `waiting()`: due retries of `delay` that wait for room
    /// go first (they were accepted before anything a blocked producer holds; `on_released` gets
    /// what was released), then the sleeping producers are woken.
    template <class Queue, class Delay, class OnReleased>
    void room_freed(Queue& queue, Delay& delay, OnReleased&& on_released) noexcept {
        if (delay.room_awaited()) {  // [R1], ordered by the [W3] load that saw a waiter
            if (const auto r = delay.release_into_room(now_ns(), queue, *this)) {
                on_released(*r);
            }
        }
        notify_producers();
    }

    /// Wakes the sleeping producers, once per sleep of theirs rather than once per freed slot: a
    /// woken producer refills the queue, then polls before it sleeps again, so it sleeps (and
    /// costs a wake-up) only when the workers are slow.
    void notify_producers() noexcept {
        if (!wake_pending_.exchange(true, std::memory_order_seq_cst)) {
            { std::lock_guard lock(mutex_); }
            cv_.notify_all();
        }
    }

    /// Counts a waiter that is not a sleeping producer (the delay queue's due retries).
    void count_waiter() noexcept {
        // [W3] [R1] seq_cst: the waiter's side of [W3] (count, then look for room again); as a
        // release it publishes what the caller wrote before (the delay queue's flag).
        blocked_.fetch_add(1, std::memory_order_seq_cst);
    }

    /// Stops counting a waiter counted by `count_waiter`.
    void uncount_waiter() noexcept {
        blocked_.fetch_sub(1, std::memory_order_relaxed);  // only a hint for consumers, see [W3]
    }

    /// Wakes every sleeping producer (the queue was closed).
    void wake_all() noexcept {
        { std::lock_guard lock(mutex_); }
        cv_.notify_all();
    }

    /// Waits until every counted submit call has returned. Pre: the queue is closed and
    /// `wake_all` was called after, so each one sees it on its next check.
    void wait_for_callers_to_leave() const noexcept {
        // [P2] seq_cst, see [P0]; as an acquire it pairs with [P1], so what the last caller did
        // to the pool happens before the destruction of the members.
        for (unsigned polls = 0; inside_.load(std::memory_order_seq_cst) != 0; ++polls) {
            if (polls < 64) {
                std::this_thread::yield();
            } else {
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
        }
    }

private:
    // Loaded after every pop: a line of its own.
    alignas(cache_line) std::atomic<std::size_t> blocked_{0};  // waiters; see [W3]
    std::atomic<bool> wake_pending_{false};  // a notification is on its way; see notify_producers
    std::atomic<std::size_t> inside_{0};     // submit calls past their first wait; see [P0]
    std::mutex mutex_;
    std::condition_variable cv_;  // sleeping producers; notified after taking mutex_
};

static_assert(alignof(back_pressure) == cache_line,
              "the waiters' count, loaded after every pop, starts a cache line of its own");

}  // namespace workerpool::detail
