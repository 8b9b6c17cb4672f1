#pragma once

/// @file
/// `detail::attempt_runner<...>`: one attempt of one request on a worker — its expiry, its
/// counters and timing, the attempt published for the supervisor, a tracked request's cancel
/// wired to the attempt's token, the handler call, and the end handed to `outcomes`.

#include <workerpool/detail/attempt_slot.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/counters.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/erased_handler.hpp>
#include <workerpool/detail/supervisor.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <random>
#include <type_traits>
#include <utility>

namespace workerpool::detail {

/// Timed attempts with a timeout below this publish with a fence ([D1]): a pool's default
/// timeout is covered by the supervisor's stamping rounds ([D3]); without one, none is.
[[nodiscard]] inline std::int64_t fenced_below(std::chrono::nanoseconds default_timeout) noexcept {
    return default_timeout.count() > 0 ? default_timeout.count()
                                       : std::numeric_limits<std::int64_t>::max();
}

/// Runs attempts. Its parts outlive it.
///
/// Thread safety: `run` on the worker that owns `w`, any number of workers at once.
template <class Request, class Result, class Outcomes>
class attempt_runner {
public:
    /// Runs `handler`'s attempts, reporting to `outcomes`; a timed attempt with a timeout shorter
    /// than `covered_timeout_ns` publishes with a fence and may kick the supervisor ([D1]).
    attempt_runner(const erased_handler<Request, Result>& handler, Outcomes& outcomes,
                   supervisor_signal& signal, std::int64_t covered_timeout_ns) noexcept
        : handler_(handler), outcomes_(outcomes), signal_(signal),
          covered_timeout_ns_(covered_timeout_ns) {}

    /// Runs one attempt of `e` on `w` (or ends it without one: cancelled by its handle while it
    /// waited, or expired), and reports its end. A plain request pays one test for tracking.
    template <class Worker>
    void run(Worker& w, envelope<Request>& e, std::minstd_rand& rng) noexcept {
        if (e.ticket == nullptr) {
            attempt<false>(w, e, rng);
        } else {
            attempt<true>(w, e, rng);
        }
    }

private:
    template <bool Tracked, class Worker>
    void attempt(Worker& w, envelope<Request>& e, std::minstd_rand& rng) noexcept {
        if (Tracked && !e.ticket->start()) {
            outcomes_.cancelled_before_start(w, e);  // its handle cancelled it while it waited
            return;
        }
        if (e.expires_ns != 0 && now_ns() >= e.expires_ns) {
            outcomes_.expired(w, e);
            return;
        }
        if (++e.attempts > 1) {
            w.counters.bump(counter::retried);
        }
        const std::int64_t started = e.enqueued_ns != 0 ? now_ns() : 0;
        if (started != 0) {
            w.wait_time.record(started - e.enqueued_ns);
        }
        if (e.timeout_ns > 0) {
            // No clock read: the supervisor stamps the deadline when it sees the attempt. A
            // timeout no shorter than the default needs no fence ([D3] covers it).
            const bool fenced = e.timeout_ns < covered_timeout_ns_;
            w.attempt.begin_timed(e.timeout_ns, fenced);
            if (fenced && signal_.too_slow_for(e.timeout_ns)) {
                signal_.kick();  // [D1] the supervisor sleeps too long to stamp us in time
            }
        } else {
            w.attempt.begin_unbounded();
        }
        if constexpr (Tracked) {
            e.ticket->attach(w.attempt);  // a cancel() now stops this attempt's token
        }
        // A flag, not a local exception_ptr: the catch writes that through its address, so it
        // lived on the stack, zeroed, tested and tested again by its destructor on every request.
        bool threw = false;
        try {
            if constexpr (std::is_void_v<Result>) {
                handler_(e.request, w.attempt.token());
            } else {
                w.payload.result.value.emplace(handler_(e.request, w.attempt.token()));
            }
        } catch (...) {
            e.last_error = std::current_exception();  // this attempt's, for failed()
            threw = true;
        }
        if constexpr (Tracked) {
            e.ticket->detach();
        }
        const stop_cause cause = outcomes_.ended(w);
        if (started != 0) {
            w.run_time.record(now_ns() - started);
        }
        if (threw) {
            outcomes_.failed(w, e, cause, rng);
        } else {
            outcomes_.template succeeded<Tracked>(w, e, cause);
        }
    }

    const erased_handler<Request, Result>& handler_;
    Outcomes& outcomes_;
    supervisor_signal& signal_;
    const std::int64_t covered_timeout_ns_;
};

}  // namespace workerpool::detail
