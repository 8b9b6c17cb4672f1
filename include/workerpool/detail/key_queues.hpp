#pragma once

/// @file
/// `detail::key_queues<Envelope>`: one request at a time per key. Which keys are held, the
/// requests that wait behind each holder in submit order, and each key's token bucket.

#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/held_count.hpp>
#include <workerpool/detail/scheduled_item.hpp>
#include <workerpool/detail/token_bucket.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// One key with held requests.
template <class Envelope>
struct scheduled_key {
    // Submitted after the one the key holds; allocated with the first of them, so that a key
    // that never has more than one request costs its map entry alone.
    std::unique_ptr<std::deque<scheduled_item<Envelope>>> waiting;
    bool held = false;     // one of its requests is ready, timed or running
    bool stalled = false;  // its next request could not move up (out of memory): see `stall`
    std::int64_t tat = 0;  // its token bucket (see token_rate)

    [[nodiscard]] bool has_waiting() const noexcept { return waiting && !waiting->empty(); }
};

/// The scheduler's keys. A key is here while one of its requests is held (ready, timed or
/// running: its "holder", which the scheduler keeps) or waits behind the holder (here, watched for
/// a cancel); a key that drains is forgotten, its memory given back, and with a key rate its
/// bucket kept aside until full (`kept_buckets`), so that a key that comes back soon finds its
/// tokens spent. Where the next request of a key goes (ready or timed) is the scheduler's call:
/// this class says which request it is.
///
/// Thread safety: none; the scheduler's lock guards every call.
template <class Envelope>
class key_queues {
    using key_map = std::unordered_map<std::uint64_t, scheduled_key<Envelope>>;

public:
    using item = scheduled_item<Envelope>;
    using position = typename key_map::iterator;  ///< A key found by `find`.

    /// Keys limited to `rate` each (`token_rate{}`: none).
    explicit key_queues(token_rate rate) noexcept : rate_(rate) {}

    key_queues(const key_queues&) = delete;
    key_queues& operator=(const key_queues&) = delete;
    key_queues(key_queues&&) = delete;
    key_queues& operator=(key_queues&&) = delete;

    /// What still waits (out of memory for a drain) is no longer watched.
    ~key_queues() {
        for_each_waiting([](item& it) { it.unwatch(); });
    }

    /// A request of key `key` arrives: returns where the key is, and whether it was free. A
    /// free key is now held: the caller places the request, or calls `unhold` if it cannot.
    /// Behind a busy one the caller queues it with `wait_behind`. Throws: `std::bad_alloc`
    /// (nothing changed).
    std::pair<position, bool> arrive(std::uint64_t key) {
        auto [k, fresh] = keys_.try_emplace(key);
        if (fresh) {
            kept_.restore(key, k->second.tat);
        }
        scheduled_key<Envelope>& s = k->second;
        if (s.held || s.has_waiting()) {
            return {k, false};
        }
        s.held = true;
        return {k, true};
    }

    /// `arrive` said key `k` was free, but its request could not be placed: the key is free
    /// again (and forgotten).
    void unhold(position k) noexcept {
        k->second.held = false;
        forget_if_idle(k);
    }

    /// `arrive` said key `k` was busy: a request built from `args` waits behind its holder,
    /// watched by `cancels` (may be null), its `not_before_ns` kept for when it moves up.
    /// Throws: `std::bad_alloc` (nothing changed; `args` untouched).
    template <class... Args>
    void wait_behind(position k, unsigned lane, std::int64_t not_before_ns,
                     cancel_listener* cancels, Args&&... args) {
        auto& waiting = k->second.waiting;
        if (!waiting) {
            waiting = std::make_unique<std::deque<item>>();
        }
        item& it = waiting->emplace_back(k->first, lane, false, std::forward<Args>(args)...);
        it.not_before_ns = not_before_ns;
        it.watch(cancels);
    }

    /// Key `key`, or `end()` when it holds nothing (handed back by a drain, or never seen).
    [[nodiscard]] position find(std::uint64_t key) noexcept { return keys_.find(key); }
    [[nodiscard]] position end() noexcept { return keys_.end(); }

    /// The request that moves up when key `k`'s holder has ended or left (it stays first in line
    /// until `pop_next`); null when none waits, and then the key is forgotten (as of `now`, for
    /// its kept bucket) and `k` no longer valid.
    [[nodiscard]] item* next(position k, std::int64_t now) noexcept {
        if (!k->second.has_waiting()) {
            forget(k, now);
            return nullptr;
        }
        return &k->second.waiting->front();
    }

    /// The request `next` returned has been placed (moved from): it leaves the line.
    void pop_next(position k) noexcept { k->second.waiting->pop_front(); }

    /// The request `next` returned could not be placed (out of memory): key `k` is held by
    /// nobody, and its requests wait (later arrivals behind them) until `unstall` places the
    /// first, or a drain hands them back.
    void stall(position k) noexcept {
        k->second.held = false;
        if (!k->second.stalled) {
            k->second.stalled = true;
            ++stalled_;
        }
    }

    /// Keys stalled, waiting for `unstall`.
    [[nodiscard]] std::size_t stalled() const noexcept { return stalled_; }

    /// Calls `place(first)` for the first waiting request of each stalled key, until one returns
    /// false (no memory yet): a key whose request it placed (moved from) is held again, the
    /// request out of its line; a stalled key whose line emptied meanwhile (its requests were
    /// cancelled) is forgotten (as of `now`, for its kept bucket). Returns whether no key is left
    /// stalled.
    template <class Place>
    bool unstall(Place&& place, std::int64_t now) noexcept {
        for (auto k = keys_.begin(); stalled_ != 0 && k != keys_.end();) {
            if (!k->second.stalled) {
                ++k;
                continue;
            }
            if (k->second.has_waiting()) {
                if (!place(k->second.waiting->front())) {
                    return false;
                }
                k->second.waiting->pop_front();
                k->second.held = true;
            }
            k->second.stalled = false;
            --stalled_;
            k = k->second.held ? std::next(k) : forget(k, now);
        }
        return stalled_ == 0;
    }

    /// Takes a token of key `key` at `now`; returns whether it had one (an unknown key has).
    bool take_token(std::uint64_t key, std::int64_t now) noexcept {
        const auto k = keys_.find(key);
        return k == keys_.end() || rate_.take(k->second.tat, now);
    }

    /// When key `key`, which must be here, next has a token.
    [[nodiscard]] std::int64_t next_token(std::uint64_t key) const noexcept {
        return rate_.next_token(keys_.at(key).tat);
    }

    /// Requests waiting behind key `key`'s holder.
    [[nodiscard]] std::size_t waiting_of(std::uint64_t key) const noexcept {
        const auto k = keys_.find(key);
        return k == keys_.end() || !k->second.waiting ? 0 : k->second.waiting->size();
    }

    /// Calls `f` on each request waiting behind a holder (each is watched).
    template <class F>
    void for_each_waiting(F&& f) noexcept {
        for (auto& [key, k] : keys_) {
            if (k.waiting) {
                for (item& it : *k.waiting) {
                    f(it);
                }
            }
        }
    }

    /// Moves each waiting request whose handle cancelled it into `out` while `out` has room
    /// (reserved by the caller: nothing here allocates), counting it out of `held`; the others
    /// keep their order. Keys stay held: their holders are the scheduler's.
    void purge_cancelled(std::vector<Envelope>& out, held_count& held) noexcept {
        for (auto& [key, k] : keys_) {
            if (k.waiting) {
                purge_fifo(*k.waiting, out, held);
            }
        }
    }

    /// Moves key `k`'s waiting requests into `out`, in order, counted out of `held`, and forgets
    /// the key. Throws: `std::bad_alloc` from `out` (reserve first).
    void hand_back(position k, std::vector<Envelope>& out, held_count& held) {
        if (k->second.waiting) {
            hand_back_fifo(*k->second.waiting, out, held);
        }
        stalled_ -= k->second.stalled ? 1U : 0U;
        keys_.erase(k);
    }

    /// `hand_back` of every key, each key's requests in order. Throws: as `hand_back`.
    void hand_back_all(std::vector<Envelope>& out, held_count& held) {
        for (auto& [key, k] : keys_) {
            if (k.waiting) {
                hand_back_fifo(*k.waiting, out, held);
            }
        }
        keys_.clear();
        stalled_ = 0;
    }

    /// Drops the kept buckets full at `now` (see `kept_buckets::prune`).
    void prune(std::int64_t now) noexcept { kept_.prune(now); }

    /// When `prune` must run next (`never`: nothing kept).
    [[nodiscard]] std::int64_t next_wake() const noexcept { return kept_.next_wake(); }

private:
    static void hand_back_fifo(std::deque<item>& fifo, std::vector<Envelope>& out,
                               held_count& held) {
        for (item& it : fifo) {
            out.push_back(it.leave());
            held.out(it.lane);
        }
    }

    // Moves the cancelled requests of `fifo` into `out` (while it has room), keeping the others
    // in order; a request need not be assignable, so each kept one is rebuilt in place.
    static void purge_fifo(std::deque<item>& fifo, std::vector<Envelope>& out,
                           held_count& held) noexcept {
        auto kept = fifo.begin();
        for (auto i = fifo.begin(); i != fifo.end(); ++i) {
            if (i->cancelled() && out.size() < out.capacity()) {
                out.push_back(i->leave());  // reserved: cannot throw
                held.out(i->lane);
            } else {
                if (kept != i) {
                    std::destroy_at(&*kept);
                    std::construct_at(&*kept, std::move(*i));
                }
                ++kept;
            }
        }
        const auto keep = static_cast<std::size_t>(kept - fifo.begin());
        while (fifo.size() > keep) {
            fifo.pop_back();
        }
    }

    // A key that drained is forgotten; with a key rate, its bucket is kept aside until full.
    // Returns the key after it.
    position forget(position k, std::int64_t now) noexcept {
        if (rate_.on()) {
            kept_.keep(k->first, k->second.tat, now);
        }
        stalled_ -= k->second.stalled ? 1U : 0U;
        const auto after = keys_.erase(k);
        if (!keys_.empty()) {
            return after;
        }
        try {
            keys_.rehash(0);  // many keys drained: give their buckets back too
        } catch (...) {
            // Out of memory for the smaller bucket array: keep the larger one (unchanged).
        }
        return keys_.end();
    }

    void forget_if_idle(position k) noexcept {
        if (!k->second.held && !k->second.has_waiting()) {
            forget(k, 0);
        }
    }

    const token_rate rate_;
    key_map keys_;             // keys with held requests
    std::size_t stalled_ = 0;  // keys with `stalled` set
    kept_buckets kept_;        // drained keys' buckets
};

}  // namespace workerpool::detail
