#pragma once

/// @file
/// What `detail::scheduler` holds, takes and reports: its settings (`schedule_settings`), where a
/// worker's request came from (`scheduled_turn`), what its calls did (`schedule_admitted`, ...),
/// one held request (`scheduled_item`, which watches its tracked request for a cancel while it
/// waits), the lane to serve next (`pick_lane`), and who ends the requests cancelled while they
/// waited (`cancelled_sink`). One key's state is in `key_queues.hpp`.

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/token_bucket.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// Where a worker's current request came from; kept in the worker's slot while it runs.
struct scheduled_turn {
    std::uint64_t key = 0;   // the key it holds (0: none)
    unsigned lane = 0;       // its priority lane
    bool scheduled = false;  // it came from the scheduler (not the ring)
    bool retried = false;    // its attempt failed and it waits in the scheduler to retry
};

/// A scheduler's settings, from the pool's options.
struct schedule_settings {
    std::size_t lanes = 1;
    std::size_t lane_capacity = 1;  // held requests per lane (retries not counted)
    std::int64_t aging_ns = 0;      // 0: no aging
    token_rate pool_rate{};
    token_rate key_rate{};

    /// The settings of a pool built with `o`.
    template <class Options>
    [[nodiscard]] static schedule_settings of(const Options& o) noexcept {
        return {o.priority_lanes, o.capacity, saturated_ns(o.priority_aging),
                token_rate::of(o.rate_limit), token_rate::of(o.key_rate_limit)};
    }
};

/// Where a submitted request goes (see `scheduler::submit`).
struct schedule_placement {
    std::uint64_t key = 0;
    unsigned lane = 0;
    std::int64_t not_before_ns = 0;  // 0: none
};

/// What a submit did.
struct schedule_admitted {
    submit_status status = submit_status::closed;
    bool ready = false;        // it can start now: wake a worker
    std::int64_t due = never;  // it waits for this time: the supervisor must wake then
};

/// What a bulk submit did: how many of its requests it accepted (a prefix), and of those how
/// many it made ready and the earliest time one waits for.
struct schedule_bulk_admitted {
    std::size_t accepted = 0;
    submit_status stopped = submit_status::accepted;  // why it stopped short (accepted: it did not)
    std::size_t ready = 0;                            // wake this many workers
    std::int64_t due = never;                         // the supervisor must wake then
    bool out_of_memory = false;  // `stopped` is `full` for want of memory, not of room
};

/// What a take did.
struct schedule_taken {
    bool got = false;             // a request was moved into the caller's `out`
    bool pool_throttled = false;  // the pool's limit stopped it (first time for this wait)
    unsigned key_throttled = 0;   // keys that went to wait for their token
    std::int64_t due = never;     // the earliest time something it put aside is due
};

/// What a release, a finish or a purge made ready, and when the supervisor must look next.
struct schedule_released {
    std::size_t ready = 0;
    std::int64_t next_due = never;
    bool more = false;  // purge_cancelled ran out of memory: call it again
};

/// One request the scheduler holds, with where it waits. While it waits where no worker looks (for
/// a time, or behind its key) a tracked one is watched: its handle's `cancel()` tells the
/// scheduler's `cancel_listener`, so that the supervisor takes it out early (see
/// `scheduler::purge_cancelled`). Moved, never copied; owned by the scheduler under its lock.
template <class Envelope>
struct scheduled_item {
    Envelope e;
    std::uint64_t key;
    std::int64_t since_ns = 0;       // ready since (for aging)
    std::int64_t not_before_ns = 0;  // kept while it waits behind its key
    unsigned lane;
    bool retry;            // a retry: its key is held already; not counted in its lane's bound
    bool watched = false;  // its ticket tells the listener of a cancel (see watch)

    template <class... Args>
    scheduled_item(std::uint64_t k, unsigned l, bool r, Args&&... args) noexcept
        : e(std::forward<Args>(args)...), key(k), lane(l), retry(r) {}

    /// It waits for a time or behind its key: a cancel of its tracked request tells `l` (at once
    /// if it was cancelled already). Nothing for a plain request, or without a listener.
    void watch(cancel_listener* l) noexcept {
        if (l != nullptr && e.ticket != nullptr && !watched) {
            e.ticket->watch(*l);
            watched = true;
        }
    }

    /// It no longer waits there (ready, handed back, taken out): a cancel tells nobody.
    void unwatch() noexcept {
        if (watched) {
            e.ticket->unwatch();
            watched = false;
        }
    }

    /// Whether it waits, watched, and its handle cancelled it (it will not run).
    [[nodiscard]] bool cancelled() const noexcept { return watched && ended_by_handle(); }

    /// Whether its handle cancelled it, watched or not: a ready one too. It will not run (the
    /// worker that takes it ends it as cancelled), so it spends no rate token.
    [[nodiscard]] bool ended_by_handle() const noexcept {
        return e.ticket != nullptr && e.ticket->done();
    }

    /// Moves its request out, unwatched (it leaves the scheduler).
    [[nodiscard]] Envelope&& leave() noexcept {
        unwatch();
        return std::move(e);
    }
};

/// The lane to serve among `ready` (one FIFO per lane): the highest whose head, aged, ranks first
/// (the older between equals); none when all are empty.
template <class Item>
[[nodiscard]] std::optional<unsigned> pick_lane(const std::vector<std::deque<Item>>& ready,
                                                const schedule_settings& s,
                                                std::int64_t now) noexcept {
    std::optional<unsigned> best;
    std::int64_t best_rank = -1;
    std::int64_t best_since = 0;
    for (std::size_t lane = s.lanes; lane-- > 0;) {
        const std::deque<Item>& fifo = ready[lane];
        if (fifo.empty()) {
            continue;
        }
        auto rank = static_cast<std::int64_t>(lane);
        if (s.aging_ns > 0 && s.lanes > 1) {
            rank = std::min<std::int64_t>(rank + (now - fifo.front().since_ns) / s.aging_ns,
                                          static_cast<std::int64_t>(s.lanes - 1));
        }
        if (rank > best_rank || (rank == best_rank && fifo.front().since_ns < best_since)) {
            best = static_cast<unsigned>(lane);
            best_rank = rank;
            best_since = fifo.front().since_ns;
        }
        if (s.aging_ns == 0) {
            break;  // no aging: the highest non-empty lane
        }
    }
    return best;
}

/// Who ends the requests the scheduler let go because their handles cancelled them while they
/// waited (`scheduler::purge_cancelled`): the pool's outcomes, on the supervisor's thread.
template <class Envelope>
class cancelled_sink {
public:
    /// Hands each of `purged` to `on_failure` as cancelled and ends its handle's request.
    virtual void deliver_cancelled(std::vector<Envelope>& purged) noexcept = 0;
    virtual ~cancelled_sink() = default;

protected:
    cancelled_sink() = default;
    cancelled_sink(const cancelled_sink&) = default;
    cancelled_sink& operator=(const cancelled_sink&) = default;
    cancelled_sink(cancelled_sink&&) noexcept = default;
    cancelled_sink& operator=(cancelled_sink&&) noexcept = default;
};

}  // namespace workerpool::detail
