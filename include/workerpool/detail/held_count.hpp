#pragma once

/// @file
/// `detail::held_count`: how many requests the scheduler holds, per priority lane against the
/// lane's bound and in all.

#include <atomic>
#include <cstddef>
#include <vector>

namespace workerpool::detail {

/// The scheduler's counts: per lane, the requests held against the lane's bound (a retry is not
/// counted there: it was accepted once already), guarded by the owner's lock; and all requests
/// held, retries included, an atomic for lock-free reads.
///
/// No tags: `all_` changes by `seq_cst` RMWs, because a draining worker wakes the sleepers after
/// it falls to 0 and a sleeper reads it (`empty`) after registering (as [W1]).
class held_count {
public:
    /// Counts for `lanes` lanes, all zero.
    explicit held_count(std::size_t lanes) : lanes_(lanes, 0) {}

    /// A new request of lane `lane` is held.
    void in(unsigned lane) noexcept {
        ++lanes_[lane];
        all_.fetch_add(1);
    }

    /// A request of lane `lane` counted by `in` leaves.
    void out(unsigned lane) noexcept {
        --lanes_[lane];
        all_.fetch_sub(1);
    }

    /// A retry is held again (its lane does not count it).
    void retry_in() noexcept { all_.fetch_add(1); }

    /// A retry leaves.
    void retry_out() noexcept { all_.fetch_sub(1); }

    /// Requests of lane `lane` held against its bound (under the owner's lock).
    [[nodiscard]] std::size_t in_lane(unsigned lane) const noexcept { return lanes_[lane]; }

    /// Whether nothing is held (a seq_cst read: see the class).
    [[nodiscard]] bool empty() const noexcept { return all_.load() == 0; }

    /// All requests held, retries included (seq_cst: the bound of a drain's reservation).
    [[nodiscard]] std::size_t all() const noexcept { return all_.load(); }

    /// All requests held, for statistics.
    [[nodiscard]] std::size_t gauge() const noexcept {
        return all_.load(std::memory_order_relaxed);  // statistics only
    }

private:
    std::vector<std::size_t> lanes_;  // guarded by the owner's lock
    std::atomic<std::size_t> all_{0};
};

}  // namespace workerpool::detail
