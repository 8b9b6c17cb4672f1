#pragma once

/// @file
/// `detail::scheduler<Envelope>`: the requests that may not simply start in ring order — one at
/// a time per key, by priority lane, not before a time, within rate limits, not while paused —
/// held without a worker until their turn, and handed to a worker that asks.

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/completion.hpp>
#include <workerpool/detail/held_count.hpp>
#include <workerpool/detail/key_queues.hpp>
#include <workerpool/detail/scheduled_item.hpp>
#include <workerpool/detail/spinning_mutex.hpp>
#include <workerpool/detail/token_bucket.hpp>
#include <workerpool/options.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// The scheduler. A request goes through it when it has a key, a priority or a `not_before`, or
/// when the pool has lanes or a rate limit; a pool that uses none of this never touches it
/// beyond one relaxed load per pop (`attention`).
///
/// Where a held request is: behind its key (`keys_`, a `key_queues`: a FIFO per key with queued
/// work, forgotten when the key drains), waiting for a time (`timed_`: its `not_before`, its retry
/// backoff, its key's next token), or ready (`ready_`: one FIFO per lane). A key has at most one
/// request outside its FIFO — ready, timed, or running — so ready keys take turns. A worker takes
/// from the highest lane (aging counted), then checks the pool's token and the key's (a key over
/// its limit goes to `timed_`); a request its handle cancelled spends neither. What a take, a
/// finish or a release made ready is reported to the caller, who wakes workers; the scheduler calls
/// nobody.
///
/// A tracked request that waits for a time or behind its key is watched (`scheduled_item`): its
/// cancel tells the listener given at construction, which wakes the supervisor, whose next pass
/// takes it out (`purge_cancelled`). A ready one is not watched: a worker takes it soon.
///
/// Thread safety: every member from any thread; one mutex guards the containers. `attention_`,
/// the counters and the gauges are atomics for lock-free reads.
template <class Envelope>
class scheduler {
public:
    /// Settings, from the pool's options.
    using settings = schedule_settings;

    using placement = schedule_placement;          ///< Where a submitted request goes.
    using admitted = schedule_admitted;            ///< What a submit did.
    using bulk_admitted = schedule_bulk_admitted;  ///< What a bulk submit did.
    using taken = schedule_taken;                  ///< What a take did.
    using released = schedule_released;            ///< What a release, finish or purge made ready.

    /// How long the supervisor waits before it tries again what it had no memory for (a due
    /// request to move up, a cancel to purge): soon, but not in a loop while memory is short.
    static constexpr std::int64_t no_memory_retry_ns = 1'000'000;

    static constexpr unsigned paused_bit = 1;  ///< `attention`: the pool is paused
    static constexpr unsigned ready_bit = 2;   ///< `attention`: a request can be taken

    /// A scheduler with settings `s`; `cancels` (null: none), which must outlive it, hears of a
    /// cancel of a request that waits for a time or behind its key.
    explicit scheduler(settings s, cancel_listener* cancels = nullptr)
        : s_(s),
          needs_clock_((s.aging_ns > 0 && s.lanes > 1) || s.pool_rate.on() || s.key_rate.on()),
          cancels_(cancels), ready_(s.lanes), keys_(s.key_rate), held_(s.lanes) {}

    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;
    scheduler(scheduler&&) = delete;
    scheduler& operator=(scheduler&&) = delete;

    /// What is still held (out of memory for a drain) is no longer watched (`keys_` unwatches
    /// its own).
    ~scheduler() {
        for (auto& [due, it] : timed_) {
            it.unwatch();
        }
    }

    /// The time for a `submit`, `take` or `finish` without a `not_before` of its own: the clock
    /// when aging or a rate limit needs it, else 0 ("unknown": nothing timed is taken for due,
    /// which is safe, and no clock is read per request).
    [[nodiscard]] std::int64_t clock_now() const noexcept { return needs_clock_ ? now_ns() : 0; }

    /// A worker's look before each pop: zero unless paused or something is ready here.
    [[nodiscard]] unsigned attention() const noexcept {
        // relaxed: a hint, read again seq_cst by the sleep predicate (`has_ready`, `paused`)
        // after the worker registered as a sleeper; every change is a seq_cst RMW followed by
        // the writer's look at the sleepers (as [W1]).
        return attention_.load(std::memory_order_relaxed);
    }

    /// Whether a request can be taken now (the sleep predicate's seq_cst read).
    [[nodiscard]] bool has_ready() const noexcept {
        return (attention_.load() & (ready_bit | paused_bit)) == ready_bit;
    }

    /// Whether the pool is paused.
    [[nodiscard]] bool paused() const noexcept { return (attention_.load() & paused_bit) != 0; }

    /// Pauses or resumes; returns whether that changed anything.
    bool set_paused(bool on) noexcept {
        // seq_cst: the caller wakes the sleepers after it (see `attention`).
        const unsigned before =
            on ? attention_.fetch_or(paused_bit) : attention_.fetch_and(~paused_bit);
        return ((before & paused_bit) != 0) != on;
    }

    /// Holds a new request built from `args` at `p` (its time `now`). Returns `full` when its lane
    /// holds `lane_capacity` already, `closed` after `close`. Never moves from `args` unless
    /// accepted. Throws: `std::bad_alloc` (nothing held, `args` untouched).
    template <class... Args>
    admitted submit(const placement& p, std::int64_t now, Args&&... args) {
        std::lock_guard lock(mutex_);
        admitted a;
        if (!closed_) {
            a.status = submit_locked(p, now, a, std::forward<Args>(args)...);
        }
        return a;
    }

    /// `submit` of each of `rs` at `p`, in order, in one pass of the lock, until one is refused
    /// (`full`, also when out of memory (then `out_of_memory` is set), or `closed`). Request `i` is
    /// built from `std::move(rs[i]), common..., sampled[i]`; a request it did not accept is left
    /// untouched.
    template <class Request, class... Common>
    bulk_admitted submit_bulk(const placement& p, std::int64_t now, std::span<Request> rs,
                              std::span<const std::int64_t> sampled,
                              const Common&... common) noexcept {
        std::lock_guard lock(mutex_);
        bulk_admitted b;
        if (closed_) {
            b.stopped = submit_status::closed;
            return b;
        }
        for (; b.accepted < rs.size(); ++b.accepted) {
            admitted a;
            try {
                a.status = submit_locked(p, now, a, std::move(rs[b.accepted]), common...,
                                         sampled[b.accepted]);
            } catch (...) {
                a.status = submit_status::full;  // out of memory: refused, untouched
                b.out_of_memory = true;
            }
            if (a.status != submit_status::accepted) {
                b.stopped = a.status;
                break;
            }
            b.ready += a.ready ? 1U : 0U;
            b.due = std::min(b.due, a.due);
        }
        return b;
    }

    /// Moves the next request to start into `out` and records where it came from in `turn`.
    /// Takes the pool's token (and the key's), or puts aside what may not start yet. A request
    /// its handle cancelled goes out without a token: it will not run.
    taken take(std::int64_t now, std::optional<Envelope>& out, scheduled_turn& turn) noexcept {
        std::lock_guard lock(mutex_);
        return take_locked(now, out, turn);
    }

    /// The request `turn` describes has ended (not retried): its key's next request moves up.
    released finish(const scheduled_turn& turn, std::int64_t now) noexcept {
        released r;
        if (turn.key == 0) {
            return r;
        }
        std::lock_guard lock(mutex_);
        finish_locked(turn, now, r);
        return r;
    }

    /// What `finish_then_take` did.
    struct finished_and_taken {
        released finished;
        bool looked = false;  // after the finish a request could be taken, so the take ran
        taken next;
    };

    /// `finish(done, now)` unless `done` was retried, then, if the ready bit of `attention` would
    /// now be set (a request ready, the pool's rate not blocking), `take(now, out, next)`: both in
    /// one pass of the lock, so that a worker that ends a keyed request and goes on to the
    /// scheduler's next one pays one pass instead of two.
    finished_and_taken finish_then_take(const scheduled_turn& done, std::int64_t now,
                                        std::optional<Envelope>& out,
                                        scheduled_turn& next) noexcept {
        std::lock_guard lock(mutex_);
        finished_and_taken ft;
        if (!done.retried && done.key != 0) {
            finish_locked(done, now, ft.finished);
        }
        if (ready_count_ != 0 && pool_blocked_until_ == 0) {
            ft.looked = true;
            ft.next = take_locked(now, out, next);
        }
        return ft;
    }

    /// A retry of the request `turn` describes, due at `due_ns` (its key stays held). Returns
    /// false when shutdown has begun: it is kept for the report instead. Throws: `std::bad_alloc`
    /// (nothing changed).
    bool retry(std::int64_t due_ns, Envelope&& e, const scheduled_turn& turn) {
        std::lock_guard lock(mutex_);
        if (draining_) {
            // Back with the report, and its key's later requests behind it: nothing of the key
            // can start any more, and the draining workers need not wait for them.
            handed_back_.reserve(handed_back_.size() + 1 + keys_.waiting_of(turn.key));
            handed_back_.push_back(std::move(e));
            if (const auto k = keys_.find(turn.key); turn.key != 0 && k != keys_.end()) {
                keys_.hand_back(k, handed_back_, held_);
            }
            update_attention_locked();
            return false;
        }
        timed_
            .emplace(std::piecewise_construct, std::forward_as_tuple(due_ns),
                     std::forward_as_tuple(turn.key, turn.lane, true, std::move(e)))
            ->second.watch(cancels_);
        held_.retry_in();
        retries_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        return true;
    }

    /// The supervisor's pass: moves what is due at `now` into the ready lists.
    released release_due(std::int64_t now) noexcept {
        std::lock_guard lock(mutex_);
        released r;
        no_memory_retry_at_ = 0;  // set again below if memory is still short
        while (!timed_.empty() && timed_.begin()->first <= now) {
            auto node = timed_.extract(timed_.begin());
            const bool retry = node.mapped().retry;
            admitted a;
            try {
                place(0, now, a, node.mapped().lane, std::move(node.mapped()));
            } catch (...) {
                timed_.insert(std::move(node));  // out of memory: try again in a while
                no_memory_retry_at_ = add_saturated(now, no_memory_retry_ns);
                break;
            }
            if (retry) {
                retries_.fetch_sub(1, std::memory_order_relaxed);  // statistics only
            }
            r.ready += a.ready ? 1 : 0;
        }
        if (pool_blocked_until_ != 0 && now >= pool_blocked_until_) {
            pool_blocked_until_ = 0;
            r.ready = std::max(r.ready, std::min(ready_count_, s_.pool_rate.burst));
        }
        if (keys_.stalled() != 0 && !unstall_locked(now, r)) {
            no_memory_retry_at_ = add_saturated(now, no_memory_retry_ns);
        }
        keys_.prune(now);
        update_attention_locked();
        r.next_due = std::min(r.next_due, next_wake_locked());
        return r;
    }

    /// The supervisor's pass after a cancel: moves into `out` each request whose handle cancelled
    /// it while it waited for a time or behind its key, and moves each key whose holder left so
    /// to its next request (as `finish`). `more`: out of memory for `out`; call again later.
    released purge_cancelled(std::int64_t now, std::vector<Envelope>& out) noexcept {
        std::lock_guard lock(mutex_);
        released r;
        std::size_t n = 0;
        const auto count = [&n](item& it) { n += it.cancelled() ? 1U : 0U; };
        for (auto& [due, it] : timed_) {
            count(it);
        }
        keys_.for_each_waiting(count);
        try {
            out.reserve(out.size() + n);  // no throw below; a cancel since then waits its turn
        } catch (...) {
            r.more = true;
            return r;
        }
        const std::size_t before = out.size();
        keys_.purge_cancelled(out, held_);  // first: a holder that leaves moves a live one up
        for (auto t = timed_.begin(); t != timed_.end();) {
            if (!t->second.cancelled() || out.size() == out.capacity()) {
                ++t;
                continue;
            }
            item& it = t->second;
            if (it.retry) {
                held_.retry_out();
                retries_.fetch_sub(1, std::memory_order_relaxed);  // statistics only
            } else {
                held_.out(it.lane);
            }
            const std::uint64_t key = it.key;
            out.push_back(it.leave());  // reserved: cannot throw
            t = timed_.erase(t);
            if (key != 0) {
                advance_locked(key, now, r);  // it held its key
            }
        }
        if (out.size() != before && room_waiters_ != 0) {
            room_.notify_all();
        }
        update_attention_locked();
        r.next_due = std::min(r.next_due, next_wake_locked());
        return r;
    }

    /// When the supervisor must wake for the scheduler ("never" when nothing waits for a time).
    [[nodiscard]] std::int64_t next_wake() const noexcept {
        std::lock_guard lock(mutex_);
        return next_wake_locked();
    }

    /// Refuses later submits and wakes producers waiting for room (intake closed).
    void close() noexcept {
        {
            std::lock_guard lock(mutex_);
            closed_ = true;
        }
        room_.notify_all();
    }

    /// Shutdown begins: what waits for a time goes into `out` (each keyed one with its key's
    /// later requests behind it), retries from now on too; what is ready keeps being served.
    /// Throws: `std::bad_alloc` (then nothing was moved).
    void start_drain_into(std::vector<Envelope>& out) {
        std::lock_guard lock(mutex_);
        draining_ = true;
        out.reserve(out.size() + held_.all());  // all it could hand back: no throw midway
        for (auto& [due, it] : timed_) {
            hand_back_locked(std::move(it), out);
        }
        timed_.clear();
        retries_.store(0, std::memory_order_relaxed);  // statistics only
        update_attention_locked();
    }

    /// Moves everything still held into `out`: retries handed back since the drain began, the
    /// ready lists from the top lane down, what waits for a time, and each key's later requests
    /// behind the one it holds (so each key's requests stay in submit order).
    void drain_into(std::vector<Envelope>& out) {
        std::lock_guard lock(mutex_);
        out.reserve(out.size() + handed_back_.size() + held_.all());  // no throw midway
        take_handed_back_locked(out);
        for (std::size_t lane = s_.lanes; lane-- > 0;) {
            for (item& it : ready_[lane]) {
                hand_back_locked(std::move(it), out);
            }
            ready_[lane].clear();
        }
        ready_count_ = 0;
        for (auto& [due, it] : timed_) {
            hand_back_locked(std::move(it), out);
        }
        timed_.clear();
        retries_.store(0, std::memory_order_relaxed);  // statistics only
        keys_.hand_back_all(out, held_);
        update_attention_locked();
    }

    /// Moves the retries handed back since `drain_into` into `out` (the destructor's last look).
    void take_handed_back(std::vector<Envelope>& out) {
        std::lock_guard lock(mutex_);
        take_handed_back_locked(out);
    }

    /// Sleeps until lane `lane` has room for a batch (a quarter of its capacity, at most 64), the
    /// scheduler closed, or `until` passed; returns false when the time ran out first. Waiting
    /// for a batch, not one slot, lets a blocked producer refill many slots per wake-up instead
    /// of waking once per request taken.
    bool wait_for_room(unsigned lane, std::optional<std::chrono::steady_clock::time_point> until) {
        lane = std::min<unsigned>(lane, static_cast<unsigned>(s_.lanes - 1));
        std::unique_lock lock(mutex_);
        ++room_waiters_;
        const auto has_room = [&] {
            return closed_ || held_.in_lane(lane) + room_batch() <= s_.lane_capacity;
        };
        bool ok = true;
        if (until) {
            ok = room_.wait_until(lock, *until, has_room);
        } else {
            room_.wait(lock, has_room);
        }
        --room_waiters_;
        return ok;
    }

    /// Whether the scheduler holds nothing (a seq_cst read: see `held_count`).
    [[nodiscard]] bool empty() const noexcept { return held_.empty(); }

    /// Requests held, retries waiting included.
    [[nodiscard]] std::size_t held() const noexcept { return held_.gauge(); }

    /// Retries waiting for their time.
    [[nodiscard]] std::size_t retries_waiting() const noexcept {
        return retries_.load(std::memory_order_relaxed);  // statistics only
    }

    /// Requests that could start now if workers asked: backlog for the scaler. With a pool rate,
    /// at most its burst: more workers would not start more of them.
    [[nodiscard]] std::size_t ready() const noexcept {
        if ((attention_.load(std::memory_order_relaxed) & ready_bit) == 0) {  // statistics only
            return 0;
        }
        const std::size_t n = ready_gauge_.load(std::memory_order_relaxed);  // statistics only
        return s_.pool_rate.on() ? std::min(n, s_.pool_rate.burst) : n;
    }

    /// Requests accepted by `submit` and `submit_bulk` so far.
    [[nodiscard]] std::uint64_t accepted() const noexcept {
        return accepted_.load(std::memory_order_relaxed);  // statistics only; see [H2]
    }

    /// Times a request waited for a token.
    [[nodiscard]] std::uint64_t throttled() const noexcept {
        return throttled_.load(std::memory_order_relaxed);  // statistics only
    }

private:
    using item = scheduled_item<Envelope>;

    [[nodiscard]] std::size_t room_batch() const noexcept {
        constexpr std::size_t largest = 64;
        return std::clamp<std::size_t>(s_.lane_capacity / 4, 1, largest);
    }

    // `submit` of an open scheduler, under the lock: `accepted` or `full` (its lane is).
    template <class... Args>
    submit_status submit_locked(const placement& p, std::int64_t now, admitted& a, Args&&... args) {
        const unsigned lane = std::min<unsigned>(p.lane, static_cast<unsigned>(s_.lanes - 1));
        if (held_.in_lane(lane) >= s_.lane_capacity) {
            return submit_status::full;
        }
        if (p.key != 0) {
            const auto [k, was_free] = keys_.arrive(p.key);
            if (!was_free) {
                keys_.wait_behind(k, lane, p.not_before_ns, cancels_, std::forward<Args>(args)...);
            } else {
                try {
                    place(p.not_before_ns, now, a, lane, p.key, lane, false,
                          std::forward<Args>(args)...);
                } catch (...) {
                    keys_.unhold(k);
                    throw;
                }
            }
        } else {
            place(p.not_before_ns, now, a, lane, std::uint64_t{0}, lane, false,
                  std::forward<Args>(args)...);
        }
        count_in(lane);
        return submit_status::accepted;
    }

    // Builds an item of lane `lane` from `item_args` where it waits: timed until
    // `not_before_ns`, else ready (built in place: on `std::bad_alloc` nothing was moved).
    template <class... ItemArgs>
    void place(std::int64_t not_before_ns, std::int64_t now, admitted& a, unsigned lane,
               ItemArgs&&... item_args) {
        if (not_before_ns > now) {
            timed_
                .emplace(std::piecewise_construct, std::forward_as_tuple(not_before_ns),
                         std::forward_as_tuple(std::forward<ItemArgs>(item_args)...))
                ->second.watch(cancels_);
            a.due = not_before_ns;
            return;
        }
        item& it = ready_[lane].emplace_back(std::forward<ItemArgs>(item_args)...);
        it.since_ns = now;
        it.unwatch();  // a worker takes it soon
        ++ready_count_;
        a.ready = pool_blocked_until_ == 0 && (attention_.load() & paused_bit) == 0;
        update_attention_locked();
    }

    // `take`, under the lock.
    taken take_locked(std::int64_t now, std::optional<Envelope>& out,
                      scheduled_turn& turn) noexcept {
        taken t;
        if (ready_count_ == 0) {
            return t;  // it was taken meanwhile: nothing to throttle
        }
        for (;;) {
            const std::optional<unsigned> lane = pick_lane(ready_, s_, now);
            if (!lane) {
                break;
            }
            std::deque<item>& fifo = ready_[*lane];
            item& it = fifo.front();
            const bool spends = !it.ended_by_handle();
            if (spends && s_.pool_rate.on() && now < s_.pool_rate.next_token(pool_tat_)) {
                if (pool_blocked_until_ == 0) {
                    t.pool_throttled = true;
                    throttled_.fetch_add(1, std::memory_order_relaxed);  // statistics only
                }
                pool_blocked_until_ = s_.pool_rate.next_token(pool_tat_);
                t.due = std::min(t.due, pool_blocked_until_);
                break;
            }
            if (spends) {
                pool_blocked_until_ = 0;
            }
            if (spends && it.key != 0 && s_.key_rate.on() && !keys_.take_token(it.key, now)) {
                ++t.key_throttled;
                throttled_.fetch_add(1, std::memory_order_relaxed);  // statistics only
                const std::int64_t due = keys_.next_token(it.key);
                const bool retry = it.retry;
                try {
                    timed_.emplace(due, std::move(it))->second.watch(cancels_);
                    if (retry) {
                        retries_.fetch_add(1, std::memory_order_relaxed);  // statistics only
                    }
                    t.due = std::min(t.due, due);
                    fifo.pop_front();
                    --ready_count_;
                    continue;
                } catch (...) {
                    // Out of memory to put it aside: it starts now, over its key's limit.
                }
            }
            if (spends) {
                (void)s_.pool_rate.take(pool_tat_, now);
            }
            out.emplace(std::move(it.e));
            turn = scheduled_turn{it.key, it.lane, true, false};
            if (!it.retry) {
                held_.out(it.lane);
            } else {
                held_.retry_out();
            }
            fifo.pop_front();
            --ready_count_;
            t.got = true;
            if (room_waiters_ != 0 && held_.in_lane(*lane) + room_batch() <= s_.lane_capacity) {
                room_.notify_all();  // a batch of room, not every slot: see wait_for_room
            }
            break;
        }
        update_attention_locked();
        return t;
    }

    // `finish` of a keyed request, under the lock.
    void finish_locked(const scheduled_turn& turn, std::int64_t now, released& r) noexcept {
        advance_locked(turn.key, now, r);
    }

    // Key `key`'s holder has ended or left: its next request moves up (else the key is
    // forgotten). Nothing when the key is gone (handed back by shutdown meanwhile).
    void advance_locked(std::uint64_t key, std::int64_t now, released& r) noexcept {
        const auto k = keys_.find(key);
        if (k == keys_.end()) {
            return;
        }
        item* next = keys_.next(k, now);
        if (next == nullptr) {
            r.next_due = std::min(r.next_due, next_wake_locked());  // a kept bucket drops later
            return;
        }
        admitted a;
        try {
            place(next->not_before_ns, now, a, next->lane, std::move(*next));
        } catch (...) {
            keys_.stall(k);  // out of memory for the ready list: the supervisor tries again
            no_memory_retry_at_ = add_saturated(now_ns(), no_memory_retry_ns);
            r.next_due = std::min(r.next_due, no_memory_retry_at_);
            return;
        }
        keys_.pop_next(k);
        r.ready += a.ready ? 1 : 0;
        r.next_due = std::min(r.next_due, a.due);
        update_attention_locked();
    }

    // Places the first request of each key stalled for want of memory (see key_queues::stall);
    // returns whether none is left stalled.
    bool unstall_locked(std::int64_t now, released& r) noexcept {
        return keys_.unstall(
            [&](item& first) noexcept {
                admitted a;
                try {
                    place(first.not_before_ns, now, a, first.lane, std::move(first));
                } catch (...) {
                    return false;  // still out of memory
                }
                r.ready += a.ready ? 1 : 0;
                r.next_due = std::min(r.next_due, a.due);
                return true;
            },
            now);
    }

    void count_in(unsigned lane) noexcept {
        held_.in(lane);
        accepted_.fetch_add(1, std::memory_order_relaxed);  // statistics only; see [H2]
    }

    // Moves `it` into `out`, and its key's later requests behind it, in order (the key is
    // forgotten). Throws: `std::bad_alloc` from `out` (reserve first).
    void hand_back_locked(item&& it, std::vector<Envelope>& out) {
        out.push_back(it.leave());
        if (it.retry) {
            held_.retry_out();
        } else {
            held_.out(it.lane);
        }
        if (const auto k = keys_.find(it.key); it.key != 0 && k != keys_.end()) {
            keys_.hand_back(k, out, held_);
        }
    }

    void take_handed_back_locked(std::vector<Envelope>& out) {
        out.reserve(out.size() + handed_back_.size());
        for (Envelope& e : handed_back_) {
            out.push_back(std::move(e));
        }
        handed_back_.clear();
    }

    [[nodiscard]] std::int64_t next_wake_locked() const noexcept {
        if (no_memory_retry_at_ != 0) {
            // A due request or a stalled key waits for memory: then, not at once (the due one's
            // time has passed); whatever falls due before then waits as little.
            return no_memory_retry_at_;
        }
        std::int64_t next = timed_.empty() ? never : timed_.begin()->first;
        if (pool_blocked_until_ != 0) {
            next = std::min(next, pool_blocked_until_);
        }
        return std::min(next, keys_.next_wake());
    }

    void update_attention_locked() noexcept {
        const bool ready = ready_count_ != 0 && pool_blocked_until_ == 0;
        ready_gauge_.store(ready_count_, std::memory_order_relaxed);  // statistics only
        if (ready) {
            attention_.fetch_or(ready_bit);
        } else if ((attention_.load(std::memory_order_relaxed) & ready_bit) !=
                   0) {  // a hint: under mutex_
            attention_.fetch_and(~ready_bit);
        }
    }

    const settings s_;
    const bool needs_clock_;          // aging or a rate: takes need the time
    cancel_listener* const cancels_;  // told of a cancel of a watched request; may be null
    mutable spinning_mutex mutex_;
    std::condition_variable_any room_;         // producers waiting for room in a lane
    std::vector<std::deque<item>> ready_;      // guarded by mutex_; per lane, oldest first
    std::multimap<std::int64_t, item> timed_;  // guarded by mutex_; by due time
    key_queues<Envelope> keys_;                // guarded by mutex_; keys with held requests
    std::vector<Envelope> handed_back_;        // guarded by mutex_; retries after the drain began
    std::size_t ready_count_ = 0;              // guarded by mutex_; items in ready_
    std::size_t room_waiters_ = 0;             // guarded by mutex_
    std::int64_t pool_tat_ = 0;                // guarded by mutex_; the pool's bucket
    std::int64_t pool_blocked_until_ = 0;      // guarded by mutex_; 0: not throttled
    std::int64_t no_memory_retry_at_ = 0;  // out of memory moving a request up: retry then; 0: no
    bool closed_ = false;                  // guarded by mutex_; submits refused
    bool draining_ = false;                // guarded by mutex_; retries handed back
    held_count held_;                      // per lane guarded by mutex_; see held_count
    std::atomic<unsigned> attention_{0};   // paused_bit | ready_bit; see attention()
    std::atomic<std::size_t> ready_gauge_{0};
    std::atomic<std::size_t> retries_{0};
    std::atomic<std::uint64_t> accepted_{0};
    std::atomic<std::uint64_t> throttled_{0};
};

}  // namespace workerpool::detail
