#pragma once

/// @file
/// What `detail::scheduler` holds and is told: its settings (`schedule_settings`), where a
/// worker's request came from (`scheduled_turn`), one held request (`scheduled_item`, which
/// watches its tracked request for a cancel while it waits), and one key's state
/// (`scheduled_key`).

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/token_bucket.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
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
    [[nodiscard]] bool cancelled() const noexcept { return watched && e.ticket->done(); }

    /// Moves its request out, unwatched (it leaves the scheduler).
    [[nodiscard]] Envelope&& leave() noexcept {
        unwatch();
        return std::move(e);
    }
};

/// One key with held requests.
template <class Envelope>
struct scheduled_key {
    // Submitted after the one the key holds; allocated with the first of them, so that a key
    // that never has more than one request costs its map entry alone.
    std::unique_ptr<std::deque<scheduled_item<Envelope>>> waiting;
    bool held = false;     // one of its requests is ready, timed or running
    std::int64_t tat = 0;  // its token bucket (see token_rate)

    [[nodiscard]] bool has_waiting() const noexcept { return waiting && !waiting->empty(); }
};

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
    cancelled_sink(cancelled_sink&&) = default;
    cancelled_sink& operator=(cancelled_sink&&) = default;
};

}  // namespace workerpool::detail
