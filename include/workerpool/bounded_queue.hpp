#pragma once

/// @file
/// `bounded_queue<T>`: the fixed-capacity, allocation-free MPMC ring that a dispatcher queues
/// its requests in; usable on its own.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/physical_memory.hpp>
#include <workerpool/detail/position_divider.hpp>
#include <workerpool/status.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace workerpool {

/// A bounded multi-producer multi-consumer FIFO ring with per-slot turn numbers (after Dmitry
/// Vyukov's design, with even/odd turns so that a capacity of 1 works too).
///
/// Elements live in place in a fixed array of cache-line-sized slots allocated once by the
/// constructor: pushing and popping never allocate. The capacity is exact (not rounded to a
/// power of two). The queue can be closed: later pushes return `submit_status::closed`, while
/// pops go on until the queue is empty, and every push that was accepted before the close is
/// visible to consumers.
///
/// Progress: a push or pop that finds its slot being written or read by a thread that was
/// preempted mid-operation reports empty (or full) rather than waiting; callers retry.
template <class T>
class bounded_queue {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "bounded_queue<T>: T must be nothrow move-constructible, so that a push or a pop "
                  "can never fail halfway; mark T's move constructor noexcept");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "bounded_queue<T>: T's destructor must not throw");

public:
    /// Creates an empty queue holding at most `capacity` elements.
    /// Throws: `std::invalid_argument` if `capacity` is 0 or above `max_capacity()`;
    /// `std::bad_alloc`.
    explicit bounded_queue(std::size_t capacity)
        : capacity_(capacity), slots_(allocate(capacity)), divider_(capacity) {}

    /// Not copyable (and so not movable either).
    bounded_queue(const bounded_queue&) = delete;
    /// Not copy-assignable (and so not move-assignable either).
    bounded_queue& operator=(const bounded_queue&) = delete;

    /// Destroys the elements still queued. Pre: no other thread uses the queue.
    ~bounded_queue() {
        // relaxed, all three: no other thread uses the queue any more; whatever handed it to
        // this thread (a join, say) ordered every push and pop before this.
        std::uint64_t head = dequeue_pos_.value.load(std::memory_order_relaxed);
        const std::uint64_t tail = enqueue_pos_.value.load(std::memory_order_relaxed) & ~closed_bit;
        for (; head != tail; ++head) {
            const place p = locate(head);
            // relaxed: as above
            if (p.at.seq.load(std::memory_order_relaxed) == full_turn(p.lap)) {
                p.at.ptr()->~T();
            }
        }
        for (std::size_t i = 0; i < capacity_; ++i) {
            slot_at(i).~slot();
        }
        ::operator delete (slots_, std::align_val_t{alignof(slot)});
    }

    /// Moves `v` into the queue if a slot is free and the queue is open.
    /// Returns `accepted` (and moves from `v`), `full` or `closed`; on refusal `v` is untouched.
    /// Thread safety: any thread. Never blocks, never allocates.
    [[nodiscard]] submit_status try_push(T&& v) noexcept { return try_emplace(std::move(v)); }

    /// Constructs an element in place from `args` if a slot is free and the queue is open.
    /// Returns `accepted`, `full` or `closed`. Thread safety: any thread. Never blocks.
    template <class... Args>
    [[nodiscard]] submit_status try_emplace(Args&&... args) noexcept {
        static_assert(std::is_nothrow_constructible_v<T, Args&&...>,
                      "bounded_queue::try_emplace: constructing T from these arguments may throw");
        // [Q4] Every load of enqueue_pos_ here is acquire, not for the slot (the CAS and [Q3-acq]
        // see to that) but so that seeing the closed bit pairs with close()'s fetch_or: what the
        // closer did first (a sharded_queue's closed flag) is then visible to this thread's later
        // calls. The position itself is a hint; the CAS checks it.
        std::uint64_t pos = enqueue_pos_.value.load(std::memory_order_acquire);
        for (;;) {
            if ((pos & closed_bit) != 0) {
                return submit_status::closed;
            }
            const auto [s, lap] = locate(pos);
            // [Q3-acq] sees the consumer's move-out and destruction that preceded [Q3-rel].
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            const auto diff = static_cast<std::int64_t>(seq - empty_turn(lap));
            if (diff == 0) {
                // [W1] seq_cst: this claim and the dispatcher's idle-worker count form a Dekker
                // pair (a producer sees a sleeper, or the sleeper sees this item). [Q4] On
                // failure, acquire, as above.
                if (enqueue_pos_.value.compare_exchange_weak(
                        pos, pos + 1, std::memory_order_seq_cst, std::memory_order_acquire)) {
                    ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
                    // [Q1] publishes the element; pairs with [Q2]
                    s.seq.store(full_turn(lap), std::memory_order_release);
                    return submit_status::accepted;
                }
            } else if (diff < 0) {
                return submit_status::full;
            } else {
                // Another producer won: retry. [Q4] acquire, as above.
                pos = enqueue_pos_.value.load(std::memory_order_acquire);
            }
        }
    }

    /// What `try_emplace_bulk` did: how many elements it constructed, and whether it stopped
    /// because the queue is closed (else, if fewer than asked, because it is full).
    struct bulk_result {
        std::size_t accepted = 0;  ///< Elements constructed: the first `accepted` of those asked.
        /// It stopped because the queue is closed (the first `accepted` went in before; a
        /// single ring constructs none then).
        bool closed = false;
    };

    /// Claims, with one CAS, as many consecutive free slots as there are from the tail, up to
    /// `n`, and constructs element `i` of them by calling `make(i, where)`, which must build a `T`
    /// at `where` (placement new) and not throw; then publishes each slot as it is built. Returns
    /// how many (a prefix of the `n`), or `closed`. Thread safety: any thread. Never blocks, never
    /// allocates.
    template <class Make>
    [[nodiscard]] bulk_result try_emplace_bulk(std::size_t n, Make&& make) noexcept {
        static_assert(std::is_nothrow_invocable_v<Make&, std::size_t, void*>,
                      "bounded_queue::try_emplace_bulk: make(i, where) must be noexcept");
        // [Q4] acquire, as in try_emplace: the closed bit pairs with close()'s fetch_or.
        std::uint64_t pos = enqueue_pos_.value.load(std::memory_order_acquire);
        while (n != 0) {
            if ((pos & closed_bit) != 0) {
                return {0, true};
            }
            // Count the free slots in a row from `pos`: each stays free until someone claims its
            // position, and only a CAS from `pos` (below) claims them. A run stops at the
            // capacity by itself: the slot of pos + capacity is the slot of pos, one turn later.
            std::size_t free = 0;
            std::int64_t first_diff = 0;
            const auto first = divider_.divide(pos);  // the run's slots follow without dividing
            for (run_cursor c{static_cast<std::size_t>(first.remainder), first.quotient}; free < n;
                 c.advance(capacity_)) {
                // [Q3-acq] sees the consumer's move-out and destruction that preceded [Q3-rel].
                const std::uint64_t seq = slot_at(c.index).seq.load(std::memory_order_acquire);
                const auto diff = static_cast<std::int64_t>(seq - empty_turn(c.lap));
                if (free == 0) {
                    first_diff = diff;
                }
                if (diff != 0) {
                    break;
                }
                ++free;
            }
            if (free == 0) {
                if (first_diff < 0) {
                    return {};  // full
                }
                // Another producer moved the tail on: look again. [Q4] acquire, as above.
                pos = enqueue_pos_.value.load(std::memory_order_acquire);
                continue;
            }
            // [W1] seq_cst, as in try_emplace; one claim for the whole run. [Q4] On failure,
            // acquire.
            if (enqueue_pos_.value.compare_exchange_weak(pos, pos + free, std::memory_order_seq_cst,
                                                         std::memory_order_acquire)) {
                run_cursor c{static_cast<std::size_t>(first.remainder), first.quotient};
                for (std::size_t i = 0; i < free; ++i, c.advance(capacity_)) {
                    slot& at = slot_at(c.index);
                    make(i, static_cast<void*>(at.storage));
                    // [Q1] publishes the element; pairs with [Q2]
                    at.seq.store(full_turn(c.lap), std::memory_order_release);
                }
                return {free, false};
            }
        }
        return {};
    }

    /// Moves the oldest element into `out` and returns true, or returns false if none is ready.
    /// Thread safety: any thread. Never blocks, never allocates.
    [[nodiscard]] bool try_pop(T& out) noexcept {
        static_assert(std::is_nothrow_move_assignable_v<T>,
                      "bounded_queue::try_pop(T&) needs a noexcept move assignment");
        return consume([&out](T&& v) noexcept { out = std::move(v); });
    }

    /// Removes the oldest element and passes it, as an rvalue, to `f`; returns whether there was
    /// one. `f` must not throw and must not touch this queue. Thread safety: any thread.
    template <class F>
    [[nodiscard]] bool consume(F&& f) noexcept {
        // relaxed: a hint; the CAS checks it, and [Q2] orders the element
        std::uint64_t pos = dequeue_pos_.value.load(std::memory_order_relaxed);
        for (;;) {
            const auto [s, lap] = locate(pos);
            // [Q2] sees the element written before [Q1]
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            const auto diff = static_cast<std::int64_t>(seq - full_turn(lap));
            if (diff == 0) {
                // [W3] seq_cst: this claim and the dispatcher's blocked-producer count form a
                // Dekker pair (a consumer sees a waiting producer, or the producer sees the free
                // slot). On failure, relaxed: a retry re-reads the slot with [Q2].
                if (dequeue_pos_.value.compare_exchange_weak(
                        pos, pos + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) {
                    T* p = s.ptr();
                    std::forward<F>(f)(std::move(*p));
                    p->~T();
                    // [Q3-rel] frees the slot; pairs with [Q3-acq]
                    s.seq.store(empty_turn(lap + 1), std::memory_order_release);
                    return true;
                }
            } else if (diff < 0) {
                return false;
            } else {
                // relaxed: another consumer won; retry (a hint, as above)
                pos = dequeue_pos_.value.load(std::memory_order_relaxed);
            }
        }
    }

    /// Closes the queue: every later push returns `closed`. Idempotent.
    /// Returns the total number of pushes ever accepted; exactly those elements can still be
    /// popped. Thread safety: any thread.
    std::uint64_t close() noexcept {
        // [Q4] seq_cst RMW on the same word as the producers' claim: a push is either before the
        // close (and counted in the result) or after it (and refused); nothing falls in between.
        // It also publishes what the closer did before to every thread that sees the closed bit.
        return enqueue_pos_.value.fetch_or(closed_bit, std::memory_order_seq_cst) & ~closed_bit;
    }

    /// Returns whether `close()` has been called. Thread safety: any thread.
    [[nodiscard]] bool is_closed() const noexcept {
        // [Q4] sees what the closer did before close()
        return (enqueue_pos_.value.load(std::memory_order_acquire) & closed_bit) != 0;
    }

    /// Returns the number of elements at one recent moment; racy by nature (may be stale).
    [[nodiscard]] std::size_t approx_size() const noexcept {
        // relaxed, both: a racy estimate, no ordering needed
        const std::uint64_t head = dequeue_pos_.value.load(std::memory_order_relaxed);
        const std::uint64_t tail = enqueue_pos_.value.load(std::memory_order_relaxed) & ~closed_bit;
        if (tail <= head) {
            return 0;
        }
        const std::uint64_t n = tail - head;
        return n > capacity_ ? capacity_ : static_cast<std::size_t>(n);
    }

    /// Returns whether some push has been claimed that no pop has claimed yet (the element may
    /// still be being written). seq_cst: this is the reading side of the Dekker pairs above.
    [[nodiscard]] bool has_claimed_elements() const noexcept {
        // [W1] seq_cst, both: a sleeping worker's re-check of the queue, its side of the pair
        const std::uint64_t tail = enqueue_pos_.value.load(std::memory_order_seq_cst) & ~closed_bit;
        const std::uint64_t head = dequeue_pos_.value.load(std::memory_order_seq_cst);
        return tail > head;
    }

    /// Returns the number of free slots at one recent moment (seq_cst, see [W3]).
    [[nodiscard]] std::size_t free_slots() const noexcept {
        // [W3] seq_cst, both: a blocked producer's check for room, its side of the pair
        const std::uint64_t head = dequeue_pos_.value.load(std::memory_order_seq_cst);
        const std::uint64_t tail = enqueue_pos_.value.load(std::memory_order_seq_cst) & ~closed_bit;
        const std::uint64_t used = tail > head ? tail - head : 0;
        return used >= capacity_ ? 0 : capacity_ - static_cast<std::size_t>(used);
    }

    /// Returns whether the next `n` pushes (1 <= n <= capacity) would find free slots, judged by
    /// the n-th slot past the tail alone (slots free in pop order, give or take the pops in
    /// flight). A hint for a producer waiting for room: polling it reads the producers' index and
    /// one slot, which only the pop of that slot writes, instead of the consumers' index, which
    /// every pop writes.
    [[nodiscard]] bool has_room_for(std::size_t n) const noexcept {
        // relaxed, both: a hint that pairs with nothing; try_emplace re-checks with acquire
        const std::uint64_t pos =
            (enqueue_pos_.value.load(std::memory_order_relaxed) & ~closed_bit) + n - 1;
        const place p = locate(pos);
        const std::uint64_t seq = p.at.seq.load(std::memory_order_relaxed);
        return static_cast<std::int64_t>(seq - empty_turn(p.lap)) >= 0;
    }

    /// Returns the total number of pushes accepted so far (including popped ones).
    [[nodiscard]] std::uint64_t pushed_count() const noexcept {
        // relaxed: statistics only
        return enqueue_pos_.value.load(std::memory_order_relaxed) & ~closed_bit;
    }

    /// Returns the exact maximum number of elements.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    /// Returns the bytes one slot takes: `T` and its turn number, rounded up to whole cache
    /// lines.
    [[nodiscard]] static constexpr std::size_t slot_size() noexcept { return sizeof(slot); }

    /// Returns the largest capacity a queue of `T` may have on this machine: its slots must fit
    /// in 1 TiB and in the machine's physical memory (the constructor writes every slot, so a
    /// larger queue could only end with the out-of-memory killer). The same bound applies to all
    /// the rings of one dispatcher together.
    [[nodiscard]] static std::size_t max_capacity() noexcept {
        std::uint64_t bytes = max_bytes;
        if (const std::uint64_t physical = detail::physical_memory(); physical != 0) {
            bytes = physical < bytes ? physical : bytes;
        }
        return static_cast<std::size_t>(bytes / sizeof(slot));
    }

    /// Throws `std::invalid_argument` naming `what` unless 0 < `capacity` <= `max_capacity()`.
    static void check_capacity(std::size_t capacity, const char* what) {
        if (capacity == 0) {
            throw std::invalid_argument(std::string("workerpool: ") + what + " must be > 0");
        }
        if (capacity > max_capacity()) {
            throw std::invalid_argument(
                std::string("workerpool: ") + what + " is too large: " + std::to_string(capacity) +
                " slots of " + std::to_string(sizeof(slot)) + " bytes; at most " +
                std::to_string(max_capacity()) +
                " fit in this machine's memory (and in 1 TiB) for this element type");
        }
    }

private:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): `storage` stays raw, see below
    struct alignas(detail::cache_line) slot {
        // 2t when free for the push of turn t (position t * capacity + index), 2t + 1 once that
        // push has written its element. Distinct values for "full at turn t" and "free for turn
        // t + 1" are what make a single-slot queue safe.
        std::atomic<std::uint64_t> seq;
        // Raw room for a T that push constructs in place and pop destroys; left uninitialised.
        // NOLINTNEXTLINE(*-avoid-c-arrays)
        alignas(T) unsigned char storage[sizeof(T)];
        T* ptr() noexcept {
            // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the T built in storage
            return std::launder(reinterpret_cast<T*>(storage));
        }
    };

    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    static constexpr std::uint64_t max_bytes = std::uint64_t{1} << 40;  // see max_capacity()

    static slot* allocate(std::size_t capacity) {
        check_capacity(capacity, "bounded_queue capacity");
        if (capacity > max_bytes / sizeof(slot)) {
            // Never true after check_capacity; written here so that the optimiser sees the bound
            // (GCC's -Walloc-size-larger-than otherwise warns about a size it cannot rule out).
            throw std::invalid_argument("workerpool: bounded_queue capacity is too large");
        }
        auto* slots = static_cast<slot*>(
            ::operator new (capacity * sizeof(slot), std::align_val_t{alignof(slot)}));
        for (std::size_t i = 0; i < capacity; ++i) {
            // NOLINTNEXTLINE(cppcoreguidelines-pro-bounds-pointer-arithmetic): see slot_at
            auto* s = ::new (static_cast<void*>(slots + i)) slot;
            // relaxed: free for turn 0; published by whatever hands the constructed queue to
            // other threads
            s->seq.store(0, std::memory_order_relaxed);
        }
        return slots;
    }

    // The slot at `i` (< capacity_): with allocate(), the only code that indexes the raw array.
    [[nodiscard]] slot& slot_at(std::size_t i) const noexcept {
        return slots_[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    }

    // Where position `pos` lives: its slot (`pos % capacity`) and its lap (`pos / capacity`),
    // from one multiply (positions stay far below 2^63: one push a nanosecond for 290 years).
    struct place {
        slot& at;
        std::uint64_t lap;
    };
    [[nodiscard]] place locate(std::uint64_t pos) const noexcept {
        const auto [lap, i] = divider_.divide(pos);
        return {slot_at(static_cast<std::size_t>(i)), lap};
    }
    // Walks a run of consecutive positions: slot index and lap, one step at a time.
    struct run_cursor {
        std::size_t index;
        std::uint64_t lap;
        void advance(std::size_t capacity) noexcept {
            if (++index == capacity) {
                index = 0;
                ++lap;
            }
        }
    };
    // The slot's sequence value while the position of lap `lap` may be pushed.
    [[nodiscard]] static constexpr std::uint64_t empty_turn(std::uint64_t lap) noexcept {
        return 2 * lap;
    }
    // The slot's sequence value once the position of lap `lap` holds its element.
    [[nodiscard]] static constexpr std::uint64_t full_turn(std::uint64_t lap) noexcept {
        return 2 * lap + 1;
    }

    const std::size_t capacity_;
    slot* const slots_;
    const detail::position_divider divider_;  // by capacity_; after slots_, which checks it
    // Producers and consumers each own a line, so claims on one side never slow the other.
    detail::padded_atomic<std::uint64_t> enqueue_pos_;  // next push position; bit 63 = closed
    detail::padded_atomic<std::uint64_t> dequeue_pos_;  // next pop position
};

}  // namespace workerpool
