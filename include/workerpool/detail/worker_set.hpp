#pragma once

/// @file
/// `detail::worker_set<Payload>`: the pool's workers — their slots, their threads, how many
/// count as capacity — and the bookkeeping of starting, retiring, reaping and joining them.

#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/counters.hpp>
#include <workerpool/detail/histogram.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/stats.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// One worker: what it shares with the supervisor and with stoppers, and its own `Payload` (the
/// request it serves: on the heap here, never on its thread's stack). Heap-allocated once, never
/// moved; alive until reaped.
template <class Payload>
struct worker_slot {
    attempt_slot attempt;             // the attempt handshake; see attempt_slot
    idle_entry idle;                  // its futex and idle-stack listing; see idle_stack
    counter_set counters;             // outcome counters; the worker is their single writer
    owned_histogram wait_time;        // sampled queue waits; single writer
    owned_histogram run_time;         // sampled attempt run times; single writer
    bool retiring = false;            // guarded by the set's mutex
    bool stuck = false;               // guarded by the set's mutex
    std::int64_t stopped_at_ns = 0;   // guarded by the set's mutex: when a deadline stopped it
    std::atomic<bool> exited{false};  // the worker's last write; see [X1]
    std::size_t id = 0;               // fixed at start
    // Its place among the live workers, in [0, live), from which the worker loop derives the
    // ring it starts at (see worker_set::seat). Written under the set's mutex; the worker reads it.
    std::atomic<std::size_t> seat{0};
    std::jthread thread;  // guarded by the set's mutex
    Payload payload;      // the worker thread's own
};

/// What `worker_set::note_returned` found about a worker whose stopped attempt ended.
enum class recovery : std::uint8_t {
    none,       ///< it was not stuck
    recovered,  ///< it was stuck; it counts as capacity again
    surplus,    ///< it was stuck and replaced: it retires now, its replacement stays
};

/// The workers. Counts: `live` workers (started, not retiring; stuck ones included) and, of those,
/// the ones `serving` (not stuck). The thread limit is `max_workers` serving plus one
/// replacement per stuck worker up to `stuck_allowance`, saturated (so `SIZE_MAX` means no limit).
///
/// Thread safety: members ending in `_locked` need `mutex()` held by the caller; the rest take
/// what they need. `live()` is a racy gauge.
template <class Payload>
class worker_set {
public:
    /// The slot type.
    using slot = worker_slot<Payload>;
    static_assert(alignof(slot) == cache_line,
                  "a worker slot is cache-line aligned, so that its attempt word, futex word and "
                  "counters (each aligned) start lines no other worker writes");

    /// A set with these limits (checked by the caller) and no worker yet.
    worker_set(std::size_t min_workers, std::size_t max_workers,
               std::size_t stuck_allowance) noexcept
        : min_(min_workers), max_(max_workers), stuck_allowance_(stuck_allowance) {}

    /// The lock that `_locked` members need.
    [[nodiscard]] std::mutex& mutex() const noexcept { return mutex_; }

    /// Live workers (started, not retiring), as a racy gauge.
    [[nodiscard]] std::size_t live() const noexcept {
        return live_.load(std::memory_order_relaxed);  // a gauge; written under mutex_
    }

    /// Worker `w`'s seat: the live workers hold seats 0, 1, ... live - 1, one each (a worker that
    /// starts takes the next; when one stops being live, the holder of the last seat moves into
    /// its place), so that `seat % rings` gives every ring a worker of its own while there are
    /// at least as many. A stuck worker's replacement takes its seat (the stuck one takes the
    /// last). Read by the worker itself; racy against a move, like `live()`.
    [[nodiscard]] static std::size_t seat(const slot& w) noexcept { return w.seat.load(); }

    /// Live workers that are not stuck: the pool's capacity to serve.
    [[nodiscard]] std::size_t serving_locked() const noexcept { return live() - stuck_; }

    /// The limits.
    [[nodiscard]] std::size_t min_locked() const noexcept { return min_; }
    /// The limits.
    [[nodiscard]] std::size_t max_locked() const noexcept { return max_; }

    /// Whether one more live worker may start (see the class comment).
    [[nodiscard]] bool below_thread_limit_locked() const noexcept {
        const std::size_t allowance = std::min(stuck_, stuck_allowance_);
        const std::size_t limit = allowance > std::numeric_limits<std::size_t>::max() - max_
                                      ? std::numeric_limits<std::size_t>::max()
                                      : max_ + allowance;
        return live() < limit;
    }

    /// Starts a worker whose thread runs a copy of `body` as `body(stop_token, slot&)`. Memory
    /// grows with the workers that exist: one slot, and one more place in `idle`. Throws:
    /// `std::system_error` if the thread cannot start, `std::bad_alloc`; nothing changed then.
    template <class Body>
    void spawn_or_throw_locked(idle_stack<slot>& idle, const Body& body, bool count_as_scale_up) {
        // Default-initialised, not value-initialised: nothing zeroes the payload.
        std::unique_ptr<slot> s(new slot);
        s->id = next_id_;
        s->seat.store(live());  // the next seat; its thread starts after this store
        slot* w = s.get();
        // Every allocation before anything changes: a slot without a thread would count as an
        // awake worker for ever.
        idle.reserve(slots_.size() + 1);
        slots_.push_back(std::move(s));
        {
            std::lock_guard lock(exit_mutex_);
            ++threads_alive_;
        }
        // Counted live before its thread starts, so that the new worker sees itself in the count.
        const std::size_t n = live() + 1;
        live_.store(n, std::memory_order_relaxed);  // written under mutex_ only
        try {
            w->thread = std::jthread([body, w](std::stop_token st) { body(st, *w); });
        } catch (...) {
            live_.store(n - 1, std::memory_order_relaxed);  // written under mutex_ only
            {
                std::lock_guard lock(exit_mutex_);
                --threads_alive_;
            }
            slots_.pop_back();
            throw;
        }
        ++next_id_;
        peak_ = std::max(peak_, n);
        if (count_as_scale_up) {
            ++scale_ups_;
        }
    }

    /// As `spawn_or_throw_locked`; returns whether the worker started.
    template <class Body>
    bool spawn_locked(idle_stack<slot>& idle, const Body& body, bool count_as_scale_up) noexcept {
        try {
            spawn_or_throw_locked(idle, body, count_as_scale_up);
            return true;
        } catch (...) {
            return false;
        }
    }

    /// Manual control: starts one worker if fewer than `max` serve; returns whether it did.
    template <class Body>
    bool add_one_locked(idle_stack<slot>& idle, const Body& body) noexcept {
        return serving_locked() < max_ && below_thread_limit_locked() &&
               spawn_locked(idle, body, true);
    }

    /// Manual control: retires one worker if more than `min` serve; returns whether it did.
    bool remove_one_locked(idle_stack<slot>& idle) noexcept {
        return serving_locked() > min_ && retire_one_locked(idle);
    }

    /// Manual control: sets the limits and moves the count into them at once (starting workers
    /// only if `may_grow`).
    template <class Body>
    void set_limits_and_move_locked(std::size_t min_workers, std::size_t max_workers,
                                    idle_stack<slot>& idle, const Body& body,
                                    bool may_grow) noexcept {
        min_ = min_workers;
        max_ = max_workers;
        if (may_grow) {
            (void)grow_locked(min_, idle, body);
        }
        (void)shrink_locked(max_, idle);
    }

    /// Starts workers until `target` serve or the thread limit stops it; returns how many.
    template <class Body>
    std::size_t grow_locked(std::size_t target, idle_stack<slot>& idle, const Body& body) noexcept {
        std::size_t added = 0;
        while (serving_locked() < target && below_thread_limit_locked() &&
               spawn_locked(idle, body, true)) {
            ++added;
        }
        return added;
    }

    /// Retires workers until at most `target` serve; returns how many.
    std::size_t shrink_locked(std::size_t target, idle_stack<slot>& idle) noexcept {
        std::size_t removed = 0;
        while (serving_locked() > target && retire_one_locked(idle)) {
            ++removed;
        }
        return removed;
    }

    /// Marks `w` retiring and wakes it; it exits after its current request.
    void retire_locked(slot& w, idle_stack<slot>& idle) noexcept {
        vacate_seat_locked(w);
        w.retiring = true;
        live_.store(live() - 1, std::memory_order_relaxed);  // written under mutex_ only
        ++scale_downs_;
        w.thread.request_stop();
        if (idle.remove(w)) {
            idle_stack<slot>::signal(w);  // asleep: wake it; awake, it sees its stop request
        }
    }

    /// Retires the longest-idle worker, else the newest busy one that is not stuck.
    bool retire_one_locked(idle_stack<slot>& idle) noexcept {
        slot* victim = idle.oldest();
        if (victim == nullptr || victim->retiring) {
            victim = nullptr;
            for (auto it = slots_.rbegin(); it != slots_.rend(); ++it) {
                if (!(*it)->retiring && !(*it)->stuck) {
                    victim = it->get();
                    break;
                }
            }
        }
        if (victim == nullptr) {
            return false;
        }
        retire_locked(*victim, idle);
        return true;
    }

    /// Marks `w` stuck (it stops counting as capacity) and, if `replace`, starts a replacement
    /// within the allowance; returns whether one started.
    template <class Body>
    bool declare_stuck_locked(slot& w, idle_stack<slot>& idle, const Body& body,
                              bool replace) noexcept {
        w.stuck = true;
        ++stuck_;
        ++stuck_total_;
        if (replace && below_thread_limit_locked() && spawn_locked(idle, body, true)) {
            ++replacements_;
            // The replacement takes the stuck worker's seat (and ring); the stuck one the last.
            slot& fresh = *slots_.back();
            const std::size_t stuck_seat = w.seat.load();
            w.seat.store(fresh.seat.load());
            fresh.seat.store(stuck_seat);
            return true;
        }
        return false;
    }

    /// Called by a worker whose stopped attempt ended: if it was stuck, it counts again, or
    /// retires when its replacement is still running.
    recovery note_returned(slot& w, idle_stack<slot>& idle) noexcept {
        std::lock_guard lock(mutex_);
        if (!w.stuck) {
            return recovery::none;
        }
        w.stuck = false;
        --stuck_;
        if (replacements_ > 0 && !w.retiring) {
            --replacements_;
            retire_locked(w, idle);
            return recovery::surplus;
        }
        return recovery::recovered;
    }

    /// The worker's last act: publishes its exit to the reaper ([X1]) and to `wait_exited_until`.
    void note_exit(slot& w) noexcept {
        {
            std::lock_guard lock(exit_mutex_);
            w.exited.store(true, std::memory_order_release);  // [X1] pairs with the reaper's load
            --threads_alive_;
        }
        exit_cv_.notify_all();
    }

    /// Waits until every thread has exited or `until_ns` passed (`int64` max: for ever); returns
    /// whether they all exited.
    bool wait_exited_until(std::int64_t until_ns) {
        std::unique_lock lock(exit_mutex_);
        const auto all_gone = [this] { return threads_alive_ == 0; };
        if (until_ns == std::numeric_limits<std::int64_t>::max()) {
            exit_cv_.wait(lock, all_gone);
            return true;
        }
        return exit_cv_.wait_until(
            lock,
            std::chrono::steady_clock::time_point(
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::nanoseconds(until_ns))),
            all_gone);
    }

    /// Joins the workers that exited and folds their counters into the totals.
    void reap_exited_locked() noexcept {
        auto keep = slots_.begin();
        for (auto it = slots_.begin(); it != slots_.end(); ++it) {
            slot& w = **it;
            if (!w.exited.load(std::memory_order_acquire)) {  // [X1]
                if (keep != it) {
                    *keep = std::move(*it);
                }
                ++keep;
                continue;
            }
            if (w.thread.joinable()) {
                w.thread.join();  // it has left its body: returns at once
            }
            if (!w.retiring) {  // exited without retiring (drain or cancel): no longer live
                vacate_seat_locked(w);
                w.retiring = true;  // seatless now: a later hand-over in this pass must skip it
                live_.store(live() - 1, std::memory_order_relaxed);  // under mutex_ only
            }
            if (w.stuck) {
                --stuck_;
            }
            w.counters.add_to(retired_);
            w.wait_time.add_to(retired_wait_);
            w.run_time.add_to(retired_run_);
        }
        slots_.erase(keep, slots_.end());
    }

    /// Asks every worker to stop, wakes it, joins it (without the lock: a stuck handler may take
    /// long, and may call `stats()`), then reaps them all.
    void join_all(idle_stack<slot>& idle) noexcept {
        {
            std::lock_guard lock(mutex_);
            for (auto& w : slots_) {
                w->thread.request_stop();
                if (idle.remove(*w)) {
                    idle_stack<slot>::signal(*w);
                }
            }
        }
        for (std::size_t i = 0;; ++i) {
            slot* w = nullptr;
            {
                std::lock_guard lock(mutex_);
                if (i >= slots_.size()) {
                    break;
                }
                w = slots_[i].get();  // nobody reaps meanwhile: the supervisor is gone
            }
            if (w->thread.joinable()) {
                w->thread.join();
            }
        }
        std::lock_guard lock(mutex_);
        reap_exited_locked();
    }

    /// Calls `f(slot&)` for each worker, reaped ones excluded.
    template <class F>
    void for_each_locked(F&& f) {
        for (auto& w : slots_) {
            f(*w);
        }
    }
    /// As above, read-only.
    template <class F>
    void for_each_locked(F&& f) const {
        for (const auto& w : slots_) {
            f(*w);
        }
    }

    /// The `i`-th worker slot, `i < slots_locked()` (by index: starting a worker grows the set).
    [[nodiscard]] slot& at_locked(std::size_t i) noexcept { return *slots_[i]; }

    /// Worker slots not yet reaped (stuck or exiting ones included).
    [[nodiscard]] std::size_t slots_locked() const noexcept { return slots_.size(); }
    /// Stuck workers.
    [[nodiscard]] std::size_t stuck_locked() const noexcept { return stuck_; }

    /// Stops every running attempt that is not stopped yet, with `cause`; returns how many.
    std::size_t stop_all_attempts_locked(stop_cause cause) noexcept {
        std::size_t stopped = 0;
        for (auto& w : slots_) {
            // acquire pairs with [A1]: the view's word is the worker's current attempt
            if (w->attempt.try_stop(w->attempt.look(std::memory_order_acquire), cause)) {
                ++stopped;
            }
        }
        return stopped;
    }

    /// Stops every running attempt with `cause`, again every millisecond, until every thread has
    /// exited or `end_ns` passed, and once more at the end (a handler that returned after a pass
    /// may have been stopped late); returns how many attempts it stopped.
    std::size_t stop_attempts_until_exited(std::int64_t end_ns, stop_cause cause) noexcept {
        std::size_t stopped = 0;
        for (bool last = false;;) {
            {
                std::lock_guard lock(mutex_);
                stopped += stop_all_attempts_locked(cause);
            }
            if (last) {
                return stopped;
            }
            const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::steady_clock::now().time_since_epoch())
                                         .count();
            last = wait_exited_until(std::min(end_ns, now + 1'000'000)) || now >= end_ns;
        }
    }

    /// Workers running an attempt now (racy, as `stats().in_flight`); at the end of shutdown's
    /// cancel phase, the stuck ones (a worker only on its way out runs none).
    [[nodiscard]] std::size_t attempts_in_flight_locked() const noexcept {
        const auto running = std::count_if(slots_.begin(), slots_.end(), [](const auto& w) {
            // relaxed: a racy look
            return w->attempt.look(std::memory_order_relaxed).kind != attempt_view::state::idle;
        });
        return static_cast<std::size_t>(running);
    }

    /// Requests that ended (completed or failed), with their outcomes: [C2] reads.
    [[nodiscard]] std::uint64_t ended_locked() const noexcept {
        std::uint64_t n = retired_[counter::completed] + retired_[counter::failed];
        for (const auto& w : slots_) {
            n += w->counters.get_acquire(counter::completed) +
                 w->counters.get_acquire(counter::failed);  // [C2]
        }
        return n;
    }

    /// Fills the worker fields of `s`: counters, gauges, latency over the window.
    void fill_stats_locked(stats_snapshot& s) const noexcept {
        counter_totals t = retired_;
        for (const auto& w : slots_) {
            w->counters.add_to(t);
            if (w->attempt.look(std::memory_order_relaxed).kind !=  // a racy gauge
                attempt_view::state::idle) {
                ++s.in_flight;
            }
        }
        t.fill(s);
        s.workers = live();
        s.stuck = stuck_;
        s.peak_workers = peak_;
        s.scale_ups = scale_ups_;
        s.scale_downs = scale_downs_;
        s.stuck_total = stuck_total_;
        histogram_counts wait;
        histogram_counts run;
        merge_latency_locked(wait, run);
        s.queue_wait = wait.since(window_base_wait_).summary();
        s.run_time = run.since(window_base_run_).summary();
    }

    /// Moves the latency window on every 5 s: `stats()` reports counts since the base, which moves
    /// up to the previous rotation's totals, so the window spans 5 to 10 s.
    void rotate_latency_window_locked(std::int64_t now) const noexcept {
        constexpr std::int64_t period = 5'000'000'000;
        if (now - window_rotated_ns_ < period) {
            return;
        }
        window_rotated_ns_ = now;
        window_base_wait_ = window_last_wait_;
        window_base_run_ = window_last_run_;
        merge_latency_locked(window_last_wait_, window_last_run_);
    }

private:
    /// `w` stops being live: the live worker in the last seat takes its seat. (Called from
    /// `reap_exited_locked` while it compacts `slots_`: skips the places moved from.)
    void vacate_seat_locked(const slot& w) noexcept {
        const std::size_t last = live() - 1;
        const std::size_t freed = w.seat.load();
        for (const auto& other : slots_) {
            if (other != nullptr && other.get() != &w && !other->retiring &&
                other->seat.load() == last) {
                other->seat.store(freed);
                return;
            }
        }
    }

    void merge_latency_locked(histogram_counts& wait, histogram_counts& run) const noexcept {
        wait = retired_wait_;
        run = retired_run_;
        for (const auto& w : slots_) {
            w->wait_time.add_to(wait);
            w->run_time.add_to(run);
        }
    }

    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<slot>> slots_;  // guarded by mutex_
    // Read by stats() and the submit path's empty-pool check: a line of its own.
    alignas(cache_line) std::atomic<std::size_t> live_{0};  // written under mutex_ only
    std::size_t min_;                                       // guarded by mutex_
    std::size_t max_;                                       // guarded by mutex_
    const std::size_t stuck_allowance_;
    std::size_t stuck_ = 0;                        // guarded by mutex_
    std::size_t replacements_ = 0;                 // guarded by mutex_: replacements still running
    std::size_t peak_ = 0;                         // guarded by mutex_
    std::uint64_t scale_ups_ = 0;                  // guarded by mutex_
    std::uint64_t scale_downs_ = 0;                // guarded by mutex_
    std::uint64_t stuck_total_ = 0;                // guarded by mutex_
    std::size_t next_id_ = 0;                      // guarded by mutex_
    counter_totals retired_;                       // guarded by mutex_: counters of reaped workers
    histogram_counts retired_wait_, retired_run_;  // guarded by mutex_
    // The latency window, moved on by the supervisor and by stats() readers (a resting supervisor
    // does not tick): mutable, guarded by mutex_.
    mutable histogram_counts window_base_wait_, window_base_run_;
    mutable histogram_counts window_last_wait_, window_last_run_;
    mutable std::int64_t window_rotated_ns_ = 0;
    std::mutex exit_mutex_;
    std::condition_variable exit_cv_;
    std::size_t threads_alive_ = 0;  // guarded by exit_mutex_
};

}  // namespace workerpool::detail
