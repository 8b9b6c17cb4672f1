#pragma once

/// @file
/// `detail::completion<Result>`: the life of one tracked request as its handle sees it — its
/// state, its result or failure, the waiters and the coroutine to resume when it ends, and the
/// attempt a `cancel()` must stop — and `detail::completion_slab<Result>`, where such slots live
/// and are reused.

#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/status.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace workerpool::detail {

class completion_slot;

/// What a `request_group` learns from its requests: each one's end. Implemented by the group's
/// shared state; called on the thread that ends the request, with no slot's lock held.
class group_link {
public:
    /// `slot` ended in `final` (a final `request_state`).
    virtual void ended(completion_slot& slot, request_state final) noexcept = 0;
    virtual ~group_link() = default;

protected:
    group_link() = default;
    group_link(const group_link&) = default;
    group_link& operator=(const group_link&) = default;
    group_link(group_link&&) = default;
    group_link& operator=(group_link&&) = default;
};

/// Told when a request that waits where no worker will soon look (in the scheduler, for a time or
/// behind its key) is cancelled, so that whoever holds it can take it out early. Called on the
/// cancelling thread under the request's own lock: it must do only small, bounded work (set a
/// flag, wake a thread) and never touch the request.
class cancel_listener {
public:
    /// A request watched by this listener was cancelled.
    virtual void cancelled() noexcept = 0;
    virtual ~cancel_listener() = default;

protected:
    cancel_listener() = default;
    cancel_listener(const cancel_listener&) = default;
    cancel_listener& operator=(const cancel_listener&) = default;
    cancel_listener(cancel_listener&&) = default;
    cancel_listener& operator=(cancel_listener&&) = default;
};

/// The slab a slot returns to when its last reference goes (see `completion_slab`).
class slot_owner {
public:
    /// Takes `slot` back for reuse. Called once per use, by whoever drops its last reference.
    virtual void recycle(completion_slot& slot) noexcept = 0;
    virtual ~slot_owner() = default;

protected:
    slot_owner() = default;
    slot_owner(const slot_owner&) = default;
    slot_owner& operator=(const slot_owner&) = default;
    slot_owner(slot_owner&&) = default;
    slot_owner& operator=(slot_owner&&) = default;
};

/// One tracked request's completion, without its result (see `completion<Result>`).
///
/// The state moves: queued → running (a worker starts an attempt) → retry_wait (it failed and
/// waits out a backoff) → running → ... → ending (a worker decided the outcome) → succeeded |
/// failed | cancelled | handed_back. `cancel()` turns queued or retry_wait into cancelled at once
/// (the worker that takes the request later ends it without calling the handler: `start()`
/// returns false) and marks a running one, stopping its attempt's token; a marked request cannot
/// move on to retry_wait or ending, so it ends as cancelled. Every transition is a CAS on one
/// word (seq_cst: the slot's fields, written before a transition, are read after one, and the
/// tracked path takes this slot's mutex anyway, so nothing here is worth a weaker order).
///
/// While the request waits where no worker looks (in the delay queue, or in the scheduler for a
/// time or behind its key), that component watches it (`watch`/`unwatch`): a cancel then also tells
/// a `cancel_listener`, under this slot's lock, so that the request leaves early.
///
/// References: the pool holds one while the request is in flight, the handle one, a group one;
/// the last to let go gives the slot back to its slab.
///
/// Thread safety: the request's side (`start`, `attach`, `detach`, `to_retry_wait`,
/// `begin_final`, `finish`) on the thread that holds the request; the handle's side (`state`,
/// `cancel`, `wait*`, `set_continuation`, `outcome`) from any thread holding a reference.
class completion_slot {
public:
    completion_slot() = default;
    completion_slot(const completion_slot&) = delete;
    completion_slot& operator=(const completion_slot&) = delete;
    completion_slot(completion_slot&&) = delete;
    completion_slot& operator=(completion_slot&&) = delete;
    ~completion_slot() = default;

    // ------------------------------------------------------------ the request's side

    /// A worker took the request from the queue: queued or retry_wait → running. False: the
    /// handle cancelled it while it waited; the worker ends it as cancelled without running it.
    [[nodiscard]] bool start() noexcept {
        std::uint32_t s = state_.load();
        while (s == raw(request_state::queued) || s == raw(request_state::retry_wait)) {
            if (state_.compare_exchange_weak(s, running_word)) {
                return true;
            }
        }
        return false;
    }

    /// The attempt `a` runs the handler from now until `detach()`: a `cancel()` meanwhile stops
    /// its token. A cancel that came since `start()` stops it here, before the handler runs.
    void attach(attempt_slot& a) noexcept {
        std::lock_guard lock(mutex_);
        attempt_ = &a;
        if ((state_.load() & cancel_flag) != 0) {
            (void)a.stop_now(stop_cause::cancelled);
        }
    }

    /// The handler returned: a `cancel()` from now on no longer touches the attempt (which the
    /// worker is about to end and reuse).
    void detach() noexcept {
        std::lock_guard lock(mutex_);
        attempt_ = nullptr;
    }

    /// The request waits where no worker will soon look at it (see `cancel_listener`): a
    /// `cancel()` from now on tells `l`, and so does this call if it was cancelled already.
    /// Until `unwatch()`, `l` must outlive the slot's use.
    void watch(cancel_listener& l) noexcept {
        std::lock_guard lock(mutex_);
        if (state_.load() == raw(request_state::cancelled)) {
            l.cancelled();
            return;
        }
        listener_ = &l;
    }

    /// The request no longer waits there: a `cancel()` from now on tells nobody. Once this
    /// returns, no call to the listener is running (both take this slot's lock).
    void unwatch() noexcept {
        std::lock_guard lock(mutex_);
        listener_ = nullptr;
    }

    /// The attempt failed and will be retried: running → retry_wait, recording the attempts so
    /// far and the error for a `cancel()` that ends it while it waits. False: it was cancelled
    /// while it ran; it must end as cancelled instead.
    [[nodiscard]] bool to_retry_wait(unsigned attempts, const std::exception_ptr& error) noexcept {
        attempts_ = attempts;
        error_ = error;
        std::uint32_t s = running_word;
        return state_.compare_exchange_strong(s, raw(request_state::retry_wait));
    }

    /// Whoever ends the request (the worker that decided its outcome, or shutdown handing it
    /// back) claims its end: queued, retry_wait or running → ending; from then on `cancel()`
    /// changes nothing. False: it was cancelled (before it started, or while it ran) and must
    /// end as cancelled.
    [[nodiscard]] bool begin_final() noexcept {
        std::uint32_t s = state_.load();
        while (s == raw(request_state::queued) || s == raw(request_state::retry_wait) ||
               s == running_word) {
            if (state_.compare_exchange_weak(s, ending_word)) {
                return true;
            }
        }
        return false;
    }

    /// Publishes the end (`final`; for a failure its reason, attempts and last error; a result
    /// is stored before this by the caller), wakes the waiters and tells the group. Pre:
    /// `begin_final()` returned true, or it returned false and `final` is cancelled. Returns the
    /// coroutine to resume, which the caller resumes after it let go of its reference. A request
    /// a `cancel()` ended while it waited keeps that end (its group hears of it here, once: this
    /// is the pool letting go of it).
    [[nodiscard]] std::coroutine_handle<> finish(request_state final, failure_reason reason,
                                                 unsigned attempts,
                                                 std::exception_ptr error) noexcept {
        // Nobody else writes the state now: it is ending or marked (ours), or cancelled.
        const bool ours = state_.load() != raw(request_state::cancelled);
        if (ours) {
            reason_ = reason;
            attempts_ = attempts;
            error_ = std::move(error);
        }
        std::coroutine_handle<> resume;
        {
            std::lock_guard lock(mutex_);  // a waiter checks the state under it
            if (ours) {
                state_.store(raw(final));  // seq_cst: publishes the fields above
            } else {
                final = request_state::cancelled;
            }
            resume = std::exchange(continuation_, {});
        }
        ended_.notify_all();
        if (group_ != nullptr) {
            group_->ended(*this, final);
        }
        return resume;
    }

    // ------------------------------------------------------------ the handle's side

    /// The state as a handle reports it (ending reads as running).
    [[nodiscard]] request_state state() const noexcept {
        const std::uint32_t s = state_.load() & ~cancel_flag;
        return s == ending_word ? request_state::running : static_cast<request_state>(s);
    }

    /// Whether the request has ended (its outcome is readable).
    [[nodiscard]] bool done() const noexcept { return is_final(state_.load()); }

    /// Cancels the request (see the class comment); returns whether this call will make it end
    /// as cancelled: false once it ended or its end was decided. A coroutine waiting for a
    /// request cancelled while it waited resumes here, on this thread (what it throws is lost).
    bool cancel() noexcept {
        std::coroutine_handle<> c;
        const bool cancelled = cancel(c);
        if (c) {
            try {
                c.resume();
            } catch (...) {
                // A coroutine type that lets exceptions out of resume(): nowhere to report it.
            }
        }
        return cancelled;
    }

    /// As `cancel()`, but a coroutine to resume is handed to the caller in `resume_later`
    /// instead (a group resumes them once it no longer touches its own state).
    bool cancel(std::coroutine_handle<>& resume_later) noexcept {
        std::uint32_t s = state_.load();
        for (;;) {
            if (s == raw(request_state::queued) || s == raw(request_state::retry_wait)) {
                if (!state_.compare_exchange_weak(s, raw(request_state::cancelled))) {
                    continue;
                }
                {
                    std::lock_guard lock(mutex_);  // a waiter checks the state under it
                    resume_later = std::exchange(continuation_, {});
                    if (listener_ != nullptr) {
                        std::exchange(listener_, nullptr)->cancelled();  // see watch()
                    }
                }
                ended_.notify_all();
                return true;
            }
            if (s != running_word) {
                return false;  // already marked, ending or ended
            }
            if (state_.compare_exchange_weak(s, running_word | cancel_flag)) {
                break;
            }
        }
        std::lock_guard lock(mutex_);
        if (attempt_ != nullptr) {
            // Stop callbacks run here, under this slot's lock: they must not cancel this request.
            (void)attempt_->stop_now(stop_cause::cancelled);
        }
        return true;
    }

    /// Blocks until the request has ended.
    void wait() const {
        std::unique_lock lock(mutex_);
        ended_.wait(lock, [this] { return done(); });
    }

    /// Blocks until the request has ended or `until` passed; returns whether it ended.
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>& until) const {
        std::unique_lock lock(mutex_);
        return ended_.wait_until(lock, until, [this] { return done(); });
    }

    /// Stores `c` to be resumed when the request ends; returns false (and stores nothing) if it
    /// has ended already, in which case the caller goes on at once.
    [[nodiscard]] bool set_continuation(std::coroutine_handle<> c) noexcept {
        std::lock_guard lock(mutex_);
        if (done()) {
            return false;
        }
        continuation_ = c;
        return true;
    }

    /// Forgets `c` if it is still the coroutine to resume (it was destroyed while it waited).
    void forget_continuation(std::coroutine_handle<> c) noexcept {
        std::lock_guard lock(mutex_);
        if (continuation_ == c) {
            continuation_ = {};
        }
    }

    /// The failure's reason, attempts and last error. Pre: `done()` and not succeeded.
    [[nodiscard]] failure_reason reason() const noexcept {
        return state_.load() == raw(request_state::cancelled) ? failure_reason::cancelled : reason_;
    }
    [[nodiscard]] unsigned attempts() const noexcept { return attempts_; }
    [[nodiscard]] const std::exception_ptr& error() const noexcept { return error_; }

    // ------------------------------------------------------------ references, group, reuse

    /// Joins `g` (before the request is submitted).
    void join(group_link* g) noexcept { group_ = g; }

    /// One more reference (a group keeping the slot for `cancel()`).
    void add_ref() noexcept { refs_.fetch_add(1); }

    /// Drops one reference; the last gives the slot back to its slab.
    void release() noexcept {
        if (refs_.fetch_sub(1) == 1) {
            owner_->recycle(*this);
        }
    }

private:
    friend class slab_base;

    /// Readies a reused slot: queued, `refs` references. Called by the slab only.
    void reset_for_use(std::uint32_t refs) noexcept {
        state_.store(raw(request_state::queued));
        refs_.store(refs);
        reason_ = failure_reason::error;
        attempts_ = 0;
        error_ = nullptr;
        group_ = nullptr;
        listener_ = nullptr;
    }

private:
    static constexpr std::uint32_t cancel_flag = 0x100;
    static constexpr std::uint32_t raw(request_state s) noexcept {
        return static_cast<std::uint32_t>(s);
    }
    static constexpr std::uint32_t running_word =
        static_cast<std::uint32_t>(request_state::running);
    // A worker (or shutdown) decided the end and is publishing it; not a `request_state`.
    static constexpr std::uint32_t ending_word = 0x80;
    static constexpr bool is_final(std::uint32_t s) noexcept {
        return s == raw(request_state::succeeded) || s == raw(request_state::failed) ||
               s == raw(request_state::cancelled) || s == raw(request_state::handed_back);
    }

    std::atomic<std::uint32_t> state_{raw(request_state::queued)};
    std::atomic<std::uint32_t> refs_{0};
    // Written before the transition that publishes them (a final state, retry_wait, or a
    // cancel's), read after seeing it.
    failure_reason reason_ = failure_reason::error;
    unsigned attempts_ = 0;
    std::exception_ptr error_;
    group_link* group_ = nullptr;  // set before the request is submitted
    mutable std::mutex mutex_;
    mutable std::condition_variable ended_;
    attempt_slot* attempt_ = nullptr;          // guarded by mutex_: the running attempt
    cancel_listener* listener_ = nullptr;      // guarded by mutex_: see watch()
    std::coroutine_handle<> continuation_;     // guarded by mutex_
    slot_owner* owner_ = nullptr;              // set once by the slab
    std::atomic<std::uint32_t> next_free_{0};  // the free list's link: index + 1; published by [G1]
    std::uint32_t index_ = 0;                  // in the slab
};

/// A slot with room for the result.
template <class Result>
class completion : public completion_slot {
public:
    /// Stores the result (before `finish(succeeded)`).
    void set_value(Result&& r) noexcept { value_.emplace(std::move(r)); }
    /// The result. Pre: succeeded; not taken yet.
    [[nodiscard]] Result take_value() noexcept { return std::move(*value_); }
    /// Forgets the result (when the slot is reused).
    void clear_value() noexcept { value_.reset(); }

private:
    std::optional<Result> value_;
};

/// No result: nothing to store.
template <>
class completion<void> : public completion_slot {
public:
    void clear_value() noexcept {}
};

/// What the slabs share: the free list over slot indices, and the rule that maps an index to its
/// chunk. Slots live in chunks of 64, 128, 256, ... (chunk k holds 64 << k), made the first time
/// the free list runs dry and never freed before the slab: a slot's address never changes, so
/// handles and envelopes hold plain pointers, and a stale look at the free list reads a slot
/// that still exists.
class slab_base {
protected:
    static constexpr std::size_t first_chunk = 64;
    static constexpr std::size_t max_chunks = 24;  // 64 * (2^24 - 1) slots: about 10^9

    /// The chunk and the offset in it of slot `index`.
    static constexpr std::pair<std::size_t, std::size_t> place(std::size_t index) noexcept {
        const std::size_t j = index + first_chunk;
        const auto k = static_cast<std::size_t>(std::bit_width(j)) -
                       static_cast<std::size_t>(std::bit_width(first_chunk));
        return {k, j - (first_chunk << k)};
    }

    static void ready(completion_slot& s, std::uint32_t refs) noexcept { s.reset_for_use(refs); }
    static void link(completion_slot& s, slot_owner* owner, std::uint32_t index) noexcept {
        s.owner_ = owner;
        s.index_ = index;
    }
    static std::uint32_t index_of(const completion_slot& s) noexcept { return s.index_; }
    static std::atomic<std::uint32_t>& next_of(completion_slot& s) noexcept { return s.next_free_; }
};

/// The slots of one pool's tracked requests (see `slab_base`). Taking a slot pops the free list
/// (one CAS, [G1]); the last reference pushes it back; a dry list makes the next chunk, under a
/// mutex: tracked requests allocate only when more of them are alive than ever before.
///
/// Held by a `std::shared_ptr`: the pool and every handle share it, so a handle that outlives
/// its pool still reads its request's end.
///
/// Thread safety: any thread.
template <class Result>
class completion_slab final : public slot_owner, private slab_base {
public:
    using slot = completion<Result>;

    completion_slab() = default;
    completion_slab(const completion_slab&) = delete;
    completion_slab& operator=(const completion_slab&) = delete;
    completion_slab(completion_slab&&) = delete;
    completion_slab& operator=(completion_slab&&) = delete;
    ~completion_slab() override {
        for (std::size_t k = 0; k < chunk_count_; ++k) {
            // relaxed: no other thread is left; the slab's owner's release ordered their work
            delete[] chunks_[k].load(std::memory_order_relaxed);
        }
    }

    /// A slot ready for a new request, with `refs` references. Throws: `std::bad_alloc` when a
    /// new chunk cannot be made, `std::length_error` past about 10^9 live slots.
    [[nodiscard]] slot& acquire(std::uint32_t refs) {
        for (;;) {
            if (slot* s = pop()) {
                ready(*s, refs);
                return *s;
            }
            grow();
        }
    }

    void recycle(completion_slot& s) noexcept override {
        static_cast<slot&>(s).clear_value();
        push(s);
    }

private:
    static constexpr std::uint64_t tag_one = std::uint64_t{1} << 32;

    slot& at(std::uint32_t index) noexcept {
        const auto [k, offset] = place(index);
        return chunks_[k].load(std::memory_order_acquire)[offset];  // [G2] pairs with grow
    }

    slot* pop() noexcept {
        // [G1] acquire: sees the link and the reset of a slot pushed by another thread.
        std::uint64_t head = head_.load(std::memory_order_acquire);
        for (;;) {
            const auto top = static_cast<std::uint32_t>(head);
            if (top == 0) {
                return nullptr;
            }
            slot& s = at(top - 1);
            // relaxed: published by [G1]; a stale value fails the CAS below (the tag moved on)
            const std::uint32_t next = next_of(s).load(std::memory_order_relaxed);
            const std::uint64_t desired = ((head & ~std::uint64_t{0xffff'ffff}) + tag_one) | next;
            // [G1] acquire, as above
            if (head_.compare_exchange_weak(head, desired, std::memory_order_acquire,
                                            std::memory_order_acquire)) {
                return &s;
            }
        }
    }

    // Pushes the chain first ... last (linked by their `next_free_`) onto the free list.
    void push_chain(completion_slot& first, completion_slot& last) noexcept {
        // relaxed: a first guess; the CAS below checks it
        std::uint64_t head = head_.load(std::memory_order_relaxed);
        for (;;) {
            // relaxed: published by [G1]
            next_of(last).store(static_cast<std::uint32_t>(head), std::memory_order_relaxed);
            const std::uint64_t desired =
                ((head & ~std::uint64_t{0xffff'ffff}) + tag_one) | (index_of(first) + 1);
            // [G1] release: the link above and the slot's reset, to the next pop
            if (head_.compare_exchange_weak(head, desired, std::memory_order_release,
                                            std::memory_order_relaxed)) {
                return;
            }
        }
    }

    void push(completion_slot& s) noexcept { push_chain(s, s); }

    void grow() {
        std::lock_guard lock(grow_mutex_);
        // relaxed: a hint; pop() decides with acquire
        if (static_cast<std::uint32_t>(head_.load(std::memory_order_relaxed)) != 0) {
            return;  // another thread grew the slab, or slots came back
        }
        if (chunk_count_ == max_chunks) {
            throw std::length_error("workerpool: more than about 10^9 tracked requests alive");
        }
        const std::size_t k = chunk_count_;
        const std::size_t size = first_chunk << k;
        const std::size_t base = (first_chunk << k) - first_chunk;  // slots in the chunks before
        const std::span<slot> chunk(new slot[size], size);
        for (std::size_t i = 0; i < size; ++i) {
            link(chunk[i], this, static_cast<std::uint32_t>(base + i));
            if (i + 1 < size) {
                // relaxed: published by [G1] (the push below)
                next_of(chunk[i]).store(static_cast<std::uint32_t>(base + i + 2),
                                        std::memory_order_relaxed);
            }
        }
        chunks_[k].store(chunk.data(), std::memory_order_release);  // [G2] pairs with at()
        ++chunk_count_;
        push_chain(chunk.front(), chunk.back());
    }

    // The free list: (tag << 32) | (index + 1); 0 in the low half: empty. The tag changes on
    // every pop and push, so a CAS from a stale head fails (no ABA).
    alignas(64) std::atomic<std::uint64_t> head_{0};
    std::array<std::atomic<slot*>, max_chunks> chunks_{};
    std::mutex grow_mutex_;
    std::size_t chunk_count_ = 0;  // guarded by grow_mutex_ (and read by the destructor)
};

}  // namespace workerpool::detail
