#pragma once

/// @file
/// `detail::attempt_slot`: one worker's attempt word, the `stop_source` its handler's token comes
/// from, and the handshake by which the supervisor stamps a deadline on the attempt and a stopper
/// (the supervisor on a deadline, shutdown on cancellation) stops it.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stop_token>
#include <thread>

namespace workerpool::detail {

/// Why an attempt's token was stopped (`cancelled`: by the request's handle).
enum class stop_cause : std::uint8_t { none, deadline, shutdown, cancelled };

/// How soon after it starts a timed attempt must get its deadline stamped: 5 % of its timeout,
/// within [1 ms, scale interval]. This bounds how late a deadline can fire.
[[nodiscard]] constexpr std::int64_t stamp_period(std::int64_t timeout_ns,
                                                  std::int64_t interval_ns) noexcept {
    return std::clamp<std::int64_t>(timeout_ns / 20, 1'000'000,
                                    std::max<std::int64_t>(interval_ns, 1'000'000));
}

/// While any worker is awake, how often the supervisor comes round to stamp timed attempts:
/// the stamp period of the pool's default timeout, or 0 without one.
[[nodiscard]] constexpr std::int64_t awake_period(std::chrono::nanoseconds default_timeout,
                                                  std::int64_t interval_ns) noexcept {
    return default_timeout.count() > 0 ? stamp_period(default_timeout.count(), interval_ns) : 0;
}

/// What a look at an attempt slot found.
struct attempt_view {
    /// The attempt's state.
    enum class state : std::uint8_t {
        idle,       ///< no attempt in flight
        unbounded,  ///< an attempt without a timeout
        unstamped,  ///< a timed attempt whose deadline is not stamped yet
        deadline,   ///< a timed attempt with its deadline (`deadline_ns`)
        stopping,   ///< a stopper is inside `request_stop()`
        stopped,    ///< its token was stopped (see `attempt_slot::cause`)
    };
    state kind = state::idle;
    std::uint64_t word = 0;        ///< the raw word, which `try_stop` expects
    std::int64_t deadline_ns = 0;  ///< for `deadline`

    [[nodiscard]] bool running() const noexcept {
        return kind == state::unbounded || kind == state::unstamped || kind == state::deadline;
    }
};

/// One worker's attempt word and stop source.
///
/// The word moves: idle → unstamped#n | unbounded (the worker begins) → deadline (the supervisor
/// stamps) → stopping → stopped (a stopper) → idle (the worker ends). `unstamped#n` carries the
/// worker's attempt number, so a stamp computed for attempt n never lands on attempt n+1. Only
/// the stopper whose CAS wins `stopping` calls `request_stop()`; the worker replaces its spent
/// source only after that stopper stored `stopped`, so no thread is ever inside `request_stop()`
/// on a source being replaced.
///
/// Thread safety: `begin_*`, `end` and `token` on the owning worker only; `look`, `stamp`,
/// `try_stop`, `cause`, `timeout_ns` from any thread that keeps the slot alive (the worker set's
/// lock).
class attempt_slot {
public:
    /// A fresh slot with its stop source. Throws: `std::bad_alloc` (the source's stop state).
    attempt_slot() : token_(source_.get_token()) {}
    attempt_slot(const attempt_slot&) = delete;
    attempt_slot& operator=(const attempt_slot&) = delete;
    attempt_slot(attempt_slot&&) = delete;
    attempt_slot& operator=(attempt_slot&&) = delete;
    ~attempt_slot() = default;

    /// The token of the current attempt (cached: a call costs no reference count).
    [[nodiscard]] const std::stop_token& token() const noexcept { return token_; }

    /// Publishes a timed attempt, not yet stamped. `fenced` makes the publication `seq_cst`
    /// ([D1]), for a timeout the supervisor's stamping rounds do not cover: the caller then reads
    /// the supervisor's horizon and kicks it if it sleeps too long.
    void begin_timed(std::int64_t timeout_ns, bool fenced) noexcept {
        timeout_ns_.store(timeout_ns, std::memory_order_relaxed);  // published by [A1] or [D1]
        number_ = (number_ + 1) & 0xffff'ffffU;
        const std::uint64_t value = unstamped | number_;
        if (fenced) {
            // [D1] seq_cst: Dekker with the supervisor's store of its horizon then its look at
            // every attempt ([D2]); as a release it also publishes what [A1] does.
            word_.store(value, std::memory_order_seq_cst);
        } else {
            // [A1] release: the timeout above, and a source replaced after the last stop, are
            // visible to a stamper or stopper whose load or CAS reads this value.
            word_.store(value, std::memory_order_release);
        }
    }

    /// Publishes an attempt without a timeout.
    void begin_unbounded() noexcept {
        word_.store(unbounded, std::memory_order_release);  // [A1], as in begin_timed
    }

    /// Ends the attempt; returns why its token was stopped (`none` if it was not). After a stop,
    /// makes a fresh source (the only allocation, and only after a stop; if it fails, later
    /// attempts see a stopped token at once and fail fast rather than the pool aborting).
    stop_cause end() noexcept {
        std::uint64_t s = word_.load(std::memory_order_acquire);  // [A3] pairs with [A2]
        // acq_rel: acquire pairs with [A2] (sees `cause_`); release orders this attempt's end
        // before a later stopper's CAS fails on `idle`. Nobody stopped it: the usual end, inline.
        if (s != stopping && s != stopped &&
            word_.compare_exchange_strong(s, idle, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) [[likely]] {
            return stop_cause::none;
        }
        return end_stopped(s);
    }

    /// Looks at the word with `order` (acquire pairs with [A1]; seq_cst is the supervisor's [D2]).
    [[nodiscard]] attempt_view look(std::memory_order order) const noexcept {
        return view_of(word_.load(order));
    }

    /// Stamps an unstamped attempt's deadline at `now` + its timeout (the attempt started at most
    /// one stamp period ago); returns what it found, after the stamp.
    attempt_view stamp(std::int64_t now) noexcept {
        std::uint64_t s = word_.load(std::memory_order_acquire);  // pairs with [A1]
        if (view_of(s).kind == attempt_view::state::unstamped) {
            const std::int64_t timeout = timeout_ns_.load(std::memory_order_relaxed);  // by [A1]
            // A timeout too long to add to now (or to tell from the markers) means "never".
            const auto deadline = static_cast<std::uint64_t>(
                std::min<std::int64_t>(timeout > std::numeric_limits<std::int64_t>::max() - now
                                           ? std::numeric_limits<std::int64_t>::max()
                                           : now + timeout,
                                       static_cast<std::int64_t>(unstamped - 1)));
            // relaxed: the worker's end-of-attempt CAS only needs the value.
            if (word_.compare_exchange_strong(s, deadline, std::memory_order_relaxed,
                                              std::memory_order_relaxed)) {
                s = deadline;
            }
        }
        return view_of(s);
    }

    /// Claims the attempt if it is still the one `seen` describes, and stops its token with
    /// `cause`; returns whether this call stopped it. Stop callbacks run on this thread.
    bool try_stop(const attempt_view& seen, stop_cause cause) noexcept {
        std::uint64_t expected = seen.word;
        // acquire pairs with [A1]: we see the worker's current source object.
        if (!seen.running() ||
            !word_.compare_exchange_strong(expected, stopping, std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
            return false;
        }
        cause_.store(cause, std::memory_order_relaxed);  // published by [A2]
        source_.request_stop();
        word_.store(stopped, std::memory_order_release);  // [A2] pairs with [A3]
        return true;
    }

    /// Stops the current attempt's token with `cause`, if one runs and no one stopped it yet;
    /// returns whether this call stopped it. Tries again when the word moved under it (the
    /// supervisor stamped the deadline between the look and the claim). Pre: the attempt cannot
    /// end meanwhile (the caller holds what keeps the worker from ending it). Records when it
    /// stopped it (`stopped_ns`), for the stuck rule.
    bool stop_now(stop_cause cause) noexcept {
        for (;;) {
            const attempt_view v = look(std::memory_order_acquire);  // pairs with [A1]
            if (!v.running()) {
                return false;
            }
            // relaxed: published by try_stop's [A2]
            stopped_ns_.store(now_ns(), std::memory_order_relaxed);
            if (try_stop(v, cause)) {
                return true;
            }
        }
    }

    /// When `stop_now` stopped the attempt (steady-clock ns); meaningful once a look saw it
    /// `stopped` with a cause `stop_now` gave.
    [[nodiscard]] std::int64_t stopped_ns() const noexcept {
        return stopped_ns_.load(std::memory_order_relaxed);  // ordered by that look ([A2])
    }

    /// Why the last stop happened; meaningful once a look saw `stopped`.
    [[nodiscard]] stop_cause cause() const noexcept {
        return cause_.load(std::memory_order_relaxed);  // ordered by the look that saw `stopped`
    }

    /// The timed attempt's timeout; meaningful once a look saw it unstamped or stamped.
    [[nodiscard]] std::int64_t timeout_ns() const noexcept {
        return timeout_ns_.load(std::memory_order_relaxed);  // ordered by that look ([A1], [D1])
    }

private:
    // end() found a stopper at work, or lost its CAS to one (`s`: the word it saw last).
    [[gnu::noinline]] stop_cause end_stopped(std::uint64_t s) noexcept {
        for (;;) {
            if (s == stopping) {
                std::this_thread::yield();  // a stopper is inside request_stop(); it ends soon
                s = word_.load(std::memory_order_acquire);  // [A3]
                continue;
            }
            // acq_rel: acquire pairs with [A2], release as in end()
            if (word_.compare_exchange_weak(s, idle, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                break;
            }
        }
        if (s != stopped) {
            return stop_cause::none;
        }
        const stop_cause cause = cause_.load(std::memory_order_relaxed);  // ordered by [A3]
        try {
            source_ = std::stop_source();
            token_ = source_.get_token();
        } catch (...) {
            // Out of memory: keep the stopped source (see end()).
        }
        return cause;
    }

    // Values of the word besides deadlines (steady-clock ns, far below `unstamped`).
    static constexpr std::uint64_t idle = 0;
    static constexpr std::uint64_t unstamped = std::uint64_t{1} << 62;
    static constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max() - 2;
    static constexpr std::uint64_t stopping = std::numeric_limits<std::uint64_t>::max() - 1;
    static constexpr std::uint64_t stopped = std::numeric_limits<std::uint64_t>::max();

    [[nodiscard]] static attempt_view view_of(std::uint64_t s) noexcept {
        attempt_view v;
        v.word = s;
        if (s == idle) {
            v.kind = attempt_view::state::idle;
        } else if (s < unstamped) {
            v.kind = attempt_view::state::deadline;
            v.deadline_ns = static_cast<std::int64_t>(s);
        } else if (s < unstamped + (std::uint64_t{1} << 32)) {
            v.kind = attempt_view::state::unstamped;
        } else if (s == unbounded) {
            v.kind = attempt_view::state::unbounded;
        } else if (s == stopping) {
            v.kind = attempt_view::state::stopping;
        } else {
            v.kind = attempt_view::state::stopped;
        }
        return v;
    }

    // The handshake word, on its own line: the worker writes it twice per request and the
    // supervisor reads it on every round.
    alignas(cache_line) std::atomic<std::uint64_t> word_{idle};
    std::atomic<std::int64_t> timeout_ns_{0};          // the timed attempt's; published by [A1]
    std::uint64_t number_ = 0;                         // the worker's own attempt count
    std::atomic<stop_cause> cause_{stop_cause::none};  // published by [A2]
    std::atomic<std::int64_t> stopped_ns_{0};          // stop_now's; published by [A2]
    std::stop_source source_;  // the attempt's; replaced by the worker only after a stop
    std::stop_token token_;    // source_.get_token(), cached
};

static_assert(alignof(attempt_slot) == cache_line,
              "a worker's attempt word starts a cache line: the supervisor reads it every round, "
              "and it must not share a line with another worker's");

}  // namespace workerpool::detail
