#pragma once

/// @file
/// `detail::idle_stack<Worker>`: the workers asleep waiting for work, most recently active on
/// top, each on a futex word of its own; and the count that lets a producer skip all of it when
/// nobody sleeps.

#include <workerpool/detail/cache_line.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace workerpool::detail {

/// A worker's place in the idle stack: its futex word, and whether (and since when) it is listed.
struct idle_entry {
    // The futex the worker sleeps on: 0 = asleep or awake, 1 = woken. On its own line: a waker
    // writes it while the worker's other fields are busy.
    alignas(cache_line) std::atomic<std::uint32_t> wake{0};
    bool listed = false;        // guarded by the stack's mutex
    std::int64_t since_ns = 0;  // guarded by the stack's mutex: when it was listed
};

static_assert(alignof(idle_entry) == cache_line,
              "a worker's futex word starts a cache line: its wakers write it while the worker's "
              "other lines are busy");

/// The sleeping workers. `Worker` has a member `idle` of type `idle_entry`.
///
/// A worker about to sleep lists itself (`push`), looks for work once more, and either takes
/// itself off again (`remove`) or waits on its futex (`wait`). A producer that saw the count
/// non-zero takes the top sleeper off (`pop_most_recent`) and signals it. The count is the
/// sleeper's side of the Dekker pair [W1] (and of [D3]): its increment precedes the sleeper's last
/// look at the queue, and a producer's claim of a slot precedes its load of the count.
///
/// Thread safety: every member from any thread; `wait` only on the worker's own entry.
template <class Worker>
class idle_stack {
public:
    /// Makes room for `n` sleepers, so that `push` never allocates. Throws: `std::bad_alloc`.
    void reserve(std::size_t n) {
        std::lock_guard lock(mutex_);
        stack_.reserve(n);
    }

    /// Lists `w` as asleep since `now`. Pre: room was reserved for it; `w` is not listed.
    void push(Worker& w, std::int64_t now) noexcept {
        std::lock_guard lock(mutex_);
        w.idle.listed = true;
        w.idle.since_ns = now;
        stack_.push_back(&w);  // never allocates: see reserve
        // [W1] seq_cst: the sleeper's side (count first, then look at the queue once more).
        count_.fetch_add(1, std::memory_order_seq_cst);
    }

    /// Puts `w` to sleep until there may be work: lists it, asks `must_look()` once more (the
    /// sleeper's half of [W1]: counted first, then looking), and either takes it off again and
    /// returns true (it is awake: tell the supervisor, [D3]) or sleeps until signalled and
    /// returns false.
    template <class MustLook>
    bool sleep(Worker& w, std::int64_t now, MustLook&& must_look) noexcept {
        push(w, now);
        if (must_look()) {
            if (remove(w)) {
                return true;
            }
            // Someone took it off the stack and is about to signal: consume that signal.
        }
        wait(w);
        return false;
    }

    /// Takes `w` off the stack if it is still listed; returns whether it was (if not, whoever
    /// took it off signals it, or already did).
    bool remove(Worker& w) noexcept {
        std::lock_guard lock(mutex_);
        if (!w.idle.listed) {
            return false;
        }
        stack_.erase(std::find(stack_.begin(), stack_.end(), &w));
        w.idle.listed = false;
        count_.fetch_sub(1, std::memory_order_seq_cst);  // [D3] a worker is awake
        return true;
    }

    /// Takes the most recently listed sleeper off (its caches are warm) and returns it, or null;
    /// the caller signals it.
    Worker* pop_most_recent() noexcept {
        std::lock_guard lock(mutex_);
        if (stack_.empty()) {
            return nullptr;
        }
        Worker* w = stack_.back();
        stack_.pop_back();
        w->idle.listed = false;
        count_.fetch_sub(1, std::memory_order_seq_cst);  // [D3] a worker wakes
        return w;
    }

    /// Takes the most recently listed sleeper off and signals it; returns whether there was one.
    bool wake_most_recent() noexcept {
        Worker* w = pop_most_recent();
        if (w != nullptr) {
            signal(*w);
        }
        return w != nullptr;
    }

    /// Wakes up to `n` sleepers, most recent first; returns how many it woke.
    std::size_t wake_up_to(std::size_t n) noexcept {
        std::size_t woken = 0;
        while (woken < n && count() != 0 && wake_most_recent()) {
            ++woken;
        }
        return woken;
    }

    /// Takes every sleeper off and signals it. Signals under the lock: taking the stack out would
    /// need a second vector, and an allocation here could only fail.
    void wake_all() noexcept {
        std::lock_guard lock(mutex_);
        for (Worker* w : stack_) {
            w->idle.listed = false;
            signal(*w);
        }
        stack_.clear();  // keeps its capacity: a later push never allocates
        count_.store(0, std::memory_order_seq_cst);  // [D3] workers wake
    }

    /// The sleeper listed longest ago, or null. It may leave the stack as soon as this returns:
    /// the caller holds the worker set's lock, which keeps it alive.
    [[nodiscard]] Worker* oldest() noexcept {
        std::lock_guard lock(mutex_);
        return stack_.empty() ? nullptr : stack_.front();
    }

    /// Appends to `out` the sleepers listed at or before `cutoff_ns`, oldest first, and returns
    /// how many are listed in all. Throws: `std::bad_alloc` (from `out`).
    std::size_t listed_before(std::int64_t cutoff_ns, std::vector<Worker*>& out) {
        std::lock_guard lock(mutex_);
        for (Worker* w : stack_) {
            if (w->idle.since_ns <= cutoff_ns) {
                out.push_back(w);
            }
        }
        return stack_.size();
    }

    /// How many sleep: the producer's side of [W1] (after its claim) and the reads of [D3].
    [[nodiscard]] std::size_t count() const noexcept {
        return count_.load(std::memory_order_seq_cst);
    }

    /// How many sleep, for statistics.
    [[nodiscard]] std::size_t approx_count() const noexcept {
        return count_.load(std::memory_order_relaxed);  // statistics only
    }

    /// Wakes `w`, which someone took off the stack.
    static void signal(Worker& w) noexcept {
        w.idle.wake.store(1, std::memory_order_release);  // [F1] pairs with [F2]
        w.idle.wake.notify_one();
    }

    /// Sleeps until `w` is signalled (at once if it already was), then re-arms its futex.
    static void wait(Worker& w) noexcept {
        w.idle.wake.wait(0, std::memory_order_acquire);   // [F2] pairs with [F1]
        w.idle.wake.store(0, std::memory_order_relaxed);  // only this worker waits on it
    }

private:
    std::mutex mutex_;
    std::vector<Worker*> stack_;  // guarded by mutex_; top = most recently listed
    // Read by every submit: a line of its own, written only when a worker sleeps or wakes.
    alignas(cache_line) std::atomic<std::size_t> count_{0};
};

}  // namespace workerpool::detail
