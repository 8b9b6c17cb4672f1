#pragma once

/// @file
/// `detail::sharded_queue<T>`: the dispatcher's queue, made of one or more `bounded_queue` rings
/// so that many producers and workers do not all claim slots on the same two cache lines.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/detail/spin.hpp>
#include <workerpool/status.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace workerpool::detail {

/// Each sharded queue has a process-unique id, so that a thread can remember its home shard in
/// each of the last few queues it pushed to (see `sharded_queue::home_shard`).
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): one counter per process
inline std::atomic<std::uint64_t> next_sharded_queue_id{1};

/// A thread's home shards in the `home_cache::size` sharded queues it pushed to most recently,
/// the most recent first.
struct home_cache {
    static constexpr std::size_t size = 8;
    struct entry {
        std::uint64_t queue = 0;  // 0: unused (ids start at 1)
        std::size_t shard = 0;
    };
    std::array<entry, size> entries;
};
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): per thread, never shared
inline thread_local home_cache my_home_cache;

/// A bounded MPMC queue split into `shards` rings whose capacities add up to exactly `capacity`.
///
/// - A push goes to the pushing thread's home shard; if that one is full it tries the others in
///   turn, so `full` means every shard was full when it was tried.
/// - A pop starts at the shard the caller names (a worker's home) and goes round the others.
/// - Order: each ring is FIFO, so a thread's elements come out in push order as long as they land
///   in the same shard (they do while its home shard has room). There is no order across shards.
/// - `close()` closes every ring; a push is ordered entirely before or after the close of the ring
///   it lands in, and once a push returned `closed` on a thread, every later push on any thread
///   returns `closed` too.
/// - With one shard it is a `bounded_queue` plus one predictable branch per call.
///
/// The Dekker pairs of the dispatcher ([W1], [W3] in dispatcher.hpp) still hold: every claim is a
/// seq_cst CAS on some ring, and `has_claimed_elements()` / `free_slots()` read every ring with
/// seq_cst loads.
template <class T>
class sharded_queue {
public:
    /// The element type.
    using value_type = T;
    /// What `try_emplace_bulk` did (see `bounded_queue::bulk_result`).
    using bulk_result = typename bounded_queue<T>::bulk_result;

    /// Throws `std::invalid_argument` unless 0 < shards <= capacity and the rings together fit
    /// in `bounded_queue<T>::max_capacity()` (checked before anything is allocated);
    /// `std::bad_alloc`.
    sharded_queue(std::size_t capacity, std::size_t shards)
        : capacity_(capacity), count_(check_shards(capacity, shards)),
          // relaxed: pairs with nothing; an id only needs to be distinct
          id_(next_sharded_queue_id.fetch_add(1, std::memory_order_relaxed)),
          // NOLINTNEXTLINE(*-avoid-c-arrays): see shards_
          shards_(std::make_unique<std::optional<bounded_queue<T>>[]>(count_)) {
        for (std::size_t i = 0; i < count_; ++i) {
            // The first `capacity % shards` rings take one slot more.
            shards_[i].emplace(capacity / count_ + (i < capacity % count_ ? 1 : 0));
        }
    }

    sharded_queue(const sharded_queue&) = delete;
    sharded_queue& operator=(const sharded_queue&) = delete;
    /// Destroys the rings and the elements still queued in them.
    ~sharded_queue() = default;

    /// Constructs an element from `args` in the caller's home shard, or in the first other shard
    /// with room. Returns `accepted`, `full` or `closed`; `args` are untouched unless accepted.
    template <class... Args>
    [[nodiscard]] submit_status try_emplace(Args&&... args) noexcept {
        if (count_ == 1) {
            return shards_[0]->try_emplace(std::forward<Args>(args)...);
        }
        // [Q5] sees what the closer did before close(); see the class doc
        if (closed_.load(std::memory_order_acquire)) {
            return submit_status::closed;
        }
        std::size_t i = home_shard();
        for (std::size_t tried = 0; tried < count_; ++tried) {
            // Forwarding more than once is safe: a ring moves from `args` only when it accepts.
            const submit_status s = shards_[i]->try_emplace(std::forward<Args>(args)...);
            if (s != submit_status::full) {
                return s;
            }
            i = i + 1 == count_ ? 0 : i + 1;
        }
        return submit_status::full;
    }

    /// Constructs up to `n` elements with `make(i, where)` (see `bounded_queue::try_emplace_bulk`):
    /// as many as the caller's home shard takes in one claim, then the other shards in turn, one
    /// claim each; then the caller's home moves on to the next shard, so that a thread's bulks go
    /// round the shards (and the workers, each starting at its own, do not share one). Returns how
    /// many (a prefix of the `n`), and `closed` if it stopped because the queue is closed.
    template <class Make>
    [[nodiscard]] bulk_result try_emplace_bulk(std::size_t n, Make&& make) noexcept {
        if (count_ == 1) {
            return shards_[0]->try_emplace_bulk(n, make);
        }
        // [Q5] sees what the closer did before close(); see the class doc
        if (closed_.load(std::memory_order_acquire)) {
            return {0, true};
        }
        bulk_result total;
        std::size_t i = home_shard();
        // home_shard() put this queue's entry first; the next bulk (or push) starts one further.
        my_home_cache.entries[0].shard = i + 1 == count_ ? 0 : i + 1;
        for (std::size_t tried = 0; tried < count_ && total.accepted < n; ++tried) {
            const std::size_t offset = total.accepted;
            const auto r = shards_[i]->try_emplace_bulk(
                n - offset,
                [&make, offset](std::size_t k, void* where) noexcept { make(offset + k, where); });
            total.accepted += r.accepted;
            if (r.closed) {
                total.closed = true;
                return total;
            }
            i = i + 1 == count_ ? 0 : i + 1;
        }
        return total;
    }

    /// The calling thread's home shard in this queue. The first thread to ask gets shard 0, the
    /// next shard 1, and so on round the shards, so the producers of one queue spread evenly
    /// whatever else they pushed to. Each thread remembers its home in the `home_cache::size`
    /// sharded queues it pushed to most recently; a thread that pushes to more queues than that
    /// in turn takes a new home (the next in the round) in a queue it comes back to after the
    /// others pushed it out.
    [[nodiscard]] std::size_t home_shard() noexcept {
        std::array<home_cache::entry, home_cache::size>& entries = my_home_cache.entries;
        if (entries[0].queue == id_ && entries[0].shard < count_) {
            return entries[0].shard;  // the common case: the queue this thread used last
        }
        // Find this queue, or take the least recently used entry, and move it to the front.
        // (`shard < count_` guards against an id met in another copy of this header's globals,
        // say a second shared library built with hidden symbols: the home is then taken anew.)
        std::size_t k = 0;
        while (k + 1 < home_cache::size &&
               !(entries[k].queue == id_ && entries[k].shard < count_)) {
            ++k;
        }
        home_cache::entry e = entries[k];
        if (!(e.queue == id_ && e.shard < count_)) {
            e.queue = id_;
            // relaxed: pairs with nothing; consecutive callers only need consecutive numbers
            e.shard = next_home_.fetch_add(1, std::memory_order_relaxed) % count_;
        }
        for (; k > 0; --k) {
            entries[k] = entries[k - 1];
        }
        entries[0] = e;
        return e.shard;
    }

    /// Pops the oldest element of the first non-empty shard, starting at `home % shard_count()`,
    /// and passes it to `f` as an rvalue; returns whether there was one. `f` must not throw. A
    /// `home` below `shard_count()` saves a division.
    template <class F>
    [[nodiscard]] bool consume(std::size_t home, F&& f) noexcept {
        if (count_ == 1) {
            return shards_[0]->consume(std::forward<F>(f));
        }
        std::size_t i = home < count_ ? home : home % count_;
        for (std::size_t tried = 0; tried < count_; ++tried) {
            if (shards_[i]->consume(f)) {
                return true;
            }
            i = i + 1 == count_ ? 0 : i + 1;
        }
        return false;
    }

    /// Moves every element left into `out`, waiting for producers that claimed a slot before the
    /// close to finish writing it. Pre: closed by this thread (`close()` read-modify-writes every
    /// ring's tail, so the tails read here are final and the reservation is enough: the callback
    /// never allocates), and no other consumer. Throws: `std::bad_alloc` (from the reservation).
    template <class Vector>
    void drain_into(Vector& out) {
        out.reserve(out.size() + approx_size());
        for (;;) {
            if (consume(0, [&out](T&& e) noexcept { out.push_back(std::move(e)); })) {
                continue;
            }
            if (!has_claimed_elements()) {
                return;
            }
            std::this_thread::yield();  // a producer that won a slot before close is still writing
        }
    }

    /// Closes every shard; returns the total number of pushes ever accepted. Idempotent.
    std::uint64_t close() noexcept {
        // [Q5] seq_cst: set before any ring closes, so a thread that saw a ring closed (an
        // acquire load of its closed bit) sees the flag on its later calls too
        closed_.store(true, std::memory_order_seq_cst);
        std::uint64_t pushed = 0;
        for (std::size_t i = 0; i < count_; ++i) {
            pushed += shards_[i]->close();
        }
        return pushed;
    }

    /// Returns whether `close()` has begun. Thread safety: any thread.
    [[nodiscard]] bool is_closed() const noexcept {
        // [Q5] sees what the closer did before close()
        return closed_.load(std::memory_order_acquire);
    }

    /// Elements queued at about one moment; racy by nature.
    [[nodiscard]] std::size_t approx_size() const noexcept {
        return sum([](const bounded_queue<T>& q) { return q.approx_size(); });
    }

    /// Whether any shard holds a claimed push that no pop has claimed (seq_cst reads of every
    /// shard: the reading side of the dispatcher's Dekker pairs).
    [[nodiscard]] bool has_claimed_elements() const noexcept {
        for (std::size_t i = 0; i < count_; ++i) {
            if (shards_[i]->has_claimed_elements()) {
                return true;
            }
        }
        return false;
    }

    /// Whether the shard that `consume(home, ...)` starts at holds a claimed push that no pop has
    /// claimed: a cheap hint for a worker polling for work, never a substitute for
    /// `has_claimed_elements()` before it sleeps.
    [[nodiscard]] bool has_claimed_elements_at(std::size_t home) const noexcept {
        return shards_[home < count_ ? home : home % count_]->has_claimed_elements();
    }

    /// Polls for up to `budget_ns` (see `spin_until`) for an element, or for `other()` to become
    /// true; returns whether either happened. It polls the ring a `consume(home, ...)` starts at,
    /// and every ring (and `other`) only on the slow checks: each ring's two indices are written by
    /// its producers and consumers, and many pollers reading all of them on every poll slow those
    /// writers down.
    template <class Other>
    bool spin_for_elements(std::size_t home, std::int64_t budget_ns, Other&& other) const noexcept {
        return spin_until(budget_ns, [&](bool slow_check) {
            return has_claimed_elements_at(home) ||
                   (slow_check && ((count_ > 1 && has_claimed_elements()) || other()));
        });
    }

    /// The calling thread's home ring (see `home_shard()`), for hints such as
    /// `bounded_queue::has_room_for`; pushes and pops go through this queue's own calls.
    [[nodiscard]] const bounded_queue<T>& home_ring() noexcept {
        return *shards_[count_ == 1 ? 0 : home_shard()];
    }

    /// Free slots over all shards at about one moment (seq_cst reads of every shard).
    [[nodiscard]] std::size_t free_slots() const noexcept {
        return sum([](const bounded_queue<T>& q) { return q.free_slots(); });
    }

    /// Pushes accepted so far, over all shards (statistics; each term only grows).
    [[nodiscard]] std::uint64_t pushed_count() const noexcept {
        return sum([](const bounded_queue<T>& q) { return q.pushed_count(); });
    }

    /// The exact total capacity.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    /// The number of rings.
    [[nodiscard]] std::size_t shard_count() const noexcept { return count_; }

private:
    static std::size_t check_shards(std::size_t capacity, std::size_t shards) {
        // The whole pool's allocation, not each ring's: 256 rings of a capacity that each ring
        // alone would accept could still ask for 256 times the memory there is.
        bounded_queue<T>::check_capacity(capacity, "options.capacity");
        if (shards == 0 || shards > capacity) {
            throw std::invalid_argument(
                "workerpool: the queue's shard count must be in [1, capacity]");
        }
        return shards;
    }

    template <class F>
    auto sum(F&& f) const noexcept {
        decltype(f(*shards_[0])) total = 0;
        for (std::size_t i = 0; i < count_; ++i) {
            total += f(*shards_[i]);
        }
        return total;
    }

    const std::size_t capacity_;
    const std::size_t count_;
    const std::uint64_t id_;
    std::atomic<std::size_t> next_home_{0};
    // One allocation of count_ rings, which can be neither copied nor moved (so no vector).
    std::unique_ptr<std::optional<bounded_queue<T>>[]> shards_;  // NOLINT(*-avoid-c-arrays)
    std::atomic<bool> closed_{false};
};

}  // namespace workerpool::detail
