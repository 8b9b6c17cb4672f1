#pragma once

/// @file
/// `retry_policy`, the backoff functions it uses, `permanent_error` (never retried) and
/// `retry_after` (retried no earlier than the delay it carries).

#include <workerpool/status.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace workerpool {

/// An exception type that a handler throws for an error that no retry can fix (bad input, an
/// unknown route). The default retry rule never retries it; it goes straight to `on_failure`.
class permanent_error : public std::runtime_error {
public:
    /// Takes the message (a `std::string` or a C string), as `std::runtime_error` does.
    using std::runtime_error::runtime_error;
};

namespace detail {

// "retry after 200 ms": the delay in the largest of s, ms, us, ns that states it exactly.
[[nodiscard]] inline std::string describe_retry_after(std::chrono::nanoseconds d,
                                                      const std::string& reason) {
    const std::int64_t ns = d.count();
    std::string text = "retry after ";
    if (ns != 0 && ns % 1'000'000'000 == 0) {
        text += std::to_string(ns / 1'000'000'000) + " s";
    } else if (ns != 0 && ns % 1'000'000 == 0) {
        text += std::to_string(ns / 1'000'000) + " ms";
    } else if (ns != 0 && ns % 1'000 == 0) {
        text += std::to_string(ns / 1'000) + " us";
    } else {
        text += std::to_string(ns) + " ns";
    }
    return reason.empty() ? text : reason + " (" + text + ")";
}

}  // namespace detail

/// An exception type that a handler throws to ask for its next attempt no earlier than `delay()`
/// from the failure: an HTTP 429 or 503 with a `Retry-After`, a lock that frees at a known time.
/// It counts as a failed attempt like any other exception: retried only while attempts remain and
/// `retry_if` agrees (the default rule retries it), else handed to `on_failure` with it as the
/// last error. The wait is `max(the policy's jittered backoff, delay())`, capped by
/// `retry_policy::max_backoff` unless `retry_policy::retry_after_may_exceed_max_backoff` is set;
/// a retry that would start after the request's deadline ends it as `expired` instead.
///
/// `throw workerpool::retry_after(std::chrono::milliseconds(200));`
class retry_after : public std::runtime_error {
public:
    /// Asks for a delay of at least `delay` (a negative one counts as 0); `reason`, if given,
    /// starts the message: `what()` is e.g. "HTTP 429 (retry after 2 s)".
    /// Throws: `std::bad_alloc`.
    explicit retry_after(std::chrono::nanoseconds delay, const std::string& reason = {})
        : std::runtime_error(detail::describe_retry_after(clamped(delay), reason)),
          delay_(clamped(delay)) {}

    /// The delay asked for, never negative.
    [[nodiscard]] std::chrono::nanoseconds delay() const noexcept { return delay_; }

private:
    [[nodiscard]] static std::chrono::nanoseconds clamped(std::chrono::nanoseconds d) noexcept {
        return std::max(d, std::chrono::nanoseconds(0));
    }

    std::chrono::nanoseconds delay_;
};

/// How a backoff delay is randomised, so that many failing requests do not retry in lock-step.
enum class jitter_mode {
    none,   ///< Exactly the exponential delay.
    full,   ///< Uniform in [0, delay] (the AWS "full jitter" scheme; the default).
    equal,  ///< Uniform in [delay/2, delay].
};

/// What the pool does when a handler throws.
///
/// Attempt `n` (1-based) that fails is followed, if `n < max_attempts` and `retry_if` agrees, by
/// attempt `n + 1` after a backoff of `min(max_backoff, initial_backoff * multiplier^(n-1))`,
/// randomised by `jitter`; a handler that threw `retry_after` waits at least its delay (see
/// `retry_delay`). The waiting request holds no worker: it sits in the delay queue (or, for a
/// request from the scheduler, in the scheduler, still holding its key) until it is due.
struct retry_policy {
    /// Total calls allowed per request, the first included (1 = no retry). Must be >= 1.
    unsigned max_attempts = 1;
    /// Backoff before the first retry. Zero retries at once (still through the queue).
    std::chrono::nanoseconds initial_backoff = std::chrono::milliseconds(10);
    /// Growth factor of the backoff per retry. Must be >= 1.
    double multiplier = 2.0;
    /// Upper bound of any single backoff. Must be >= 0.
    std::chrono::nanoseconds max_backoff = std::chrono::seconds(5);
    /// Randomisation of each delay.
    jitter_mode jitter = jitter_mode::full;
    /// Decides whether the attempt numbered `attempt` (1-based) that threw `error` may be retried.
    /// Empty: retry everything except `permanent_error`. Called on a pool thread; must be
    /// thread-safe. If it throws, the request is not retried.
    std::function<bool(const std::exception_ptr& error, unsigned attempt)> retry_if;
    /// Whether a `retry_after` may ask for a longer wait than `max_backoff`. False: its delay is
    /// capped at `max_backoff`, like any backoff. True: it is honoured in full (the request's
    /// deadline still bounds it).
    bool retry_after_may_exceed_max_backoff = false;
};

namespace detail {

/// Converts a count of nanoseconds held in a double to a duration: negative and NaN give 0, and
/// values from 2^63 up saturate at `nanoseconds::max()` instead of overflowing.
[[nodiscard]] inline std::chrono::nanoseconds saturating_nanoseconds(double ns) noexcept {
    constexpr double limit = 9.2e18;  // just below 2^63, which does not fit in an int64
    if (!(ns > 0.0)) {
        return std::chrono::nanoseconds(0);
    }
    if (ns >= limit) {
        return std::chrono::nanoseconds::max();
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

}  // namespace detail

/// Returns the un-jittered backoff after `failed_attempts` failures (>= 1):
/// `min(max_backoff, initial_backoff * multiplier^(failed_attempts - 1))`. Pure; never throws.
[[nodiscard]] inline std::chrono::nanoseconds backoff_ceiling(const retry_policy& p,
                                                              unsigned failed_attempts) noexcept {
    const auto cap = static_cast<double>(p.max_backoff.count());
    auto d = static_cast<double>(p.initial_backoff.count());
    for (unsigned i = 1; i < failed_attempts && d < cap; ++i) {
        d *= p.multiplier;
    }
    d = std::min(d, cap);
    return detail::saturating_nanoseconds(d);
}

/// Returns the backoff after `failed_attempts` failures with the policy's jitter applied, where
/// `unit_random` is a uniform draw from [0, 1) supplied by the caller (inject a seeded generator
/// in tests). Pure; never throws.
[[nodiscard]] inline std::chrono::nanoseconds
backoff_delay(const retry_policy& p, unsigned failed_attempts, double unit_random) noexcept {
    const auto ceiling = static_cast<double>(backoff_ceiling(p, failed_attempts).count());
    const double u = std::clamp(unit_random, 0.0, 1.0);
    double d = ceiling;
    switch (p.jitter) {
    case jitter_mode::none:
        break;
    case jitter_mode::full:
        d = ceiling * u;
        break;
    case jitter_mode::equal:
        d = ceiling / 2 + ceiling / 2 * u;
        break;
    }
    return detail::saturating_nanoseconds(d);
}

/// Returns the delay that `error` asks for if it is a `retry_after` (or derives from one), and
/// `std::nullopt` for any other error or none. Never throws.
[[nodiscard]] inline std::optional<std::chrono::nanoseconds>
requested_retry_delay(const std::exception_ptr& error) noexcept {
    if (!error) {
        return std::nullopt;
    }
    try {
        std::rethrow_exception(error);
    } catch (const retry_after& r) {
        return r.delay();
    } catch (...) {
        return std::nullopt;
    }
}

/// Returns the wait before the retry that follows `failed_attempts` failures (>= 1) when the
/// last one asked for `requested` (see `requested_retry_delay`; `std::nullopt`: it asked for
/// nothing): the jittered `backoff_delay(p, failed_attempts, unit_random)`, raised to
/// `requested`, which is first capped at `p.max_backoff` unless
/// `p.retry_after_may_exceed_max_backoff`. A negative `requested` counts as 0. Pure; never throws.
[[nodiscard]] inline std::chrono::nanoseconds
retry_delay(const retry_policy& p, unsigned failed_attempts, double unit_random,
            std::optional<std::chrono::nanoseconds> requested) noexcept {
    const auto backoff = backoff_delay(p, failed_attempts, unit_random);
    if (!requested) {
        return backoff;
    }
    auto asked = std::max(*requested, std::chrono::nanoseconds(0));
    if (!p.retry_after_may_exceed_max_backoff) {
        asked = std::min(asked, std::max(p.max_backoff, std::chrono::nanoseconds(0)));
    }
    return std::max(backoff, asked);
}

/// Returns the wait before the retry that follows `failed_attempts` failures (>= 1), the last of
/// which threw `error`: `retry_delay(p, failed_attempts, unit_random,
/// requested_retry_delay(error))`. Pure; never throws.
[[nodiscard]] inline std::chrono::nanoseconds
retry_delay(const retry_policy& p, unsigned failed_attempts, double unit_random,
            const std::exception_ptr& error) noexcept {
    return retry_delay(p, failed_attempts, unit_random, requested_retry_delay(error));
}

/// Returns whether the default rule (no `retry_if`) retries `error`: everything but a
/// `permanent_error`.
[[nodiscard]] inline bool default_retry_if(const std::exception_ptr& error) noexcept {
    if (!error) {
        return true;
    }
    try {
        std::rethrow_exception(error);
    } catch (const permanent_error&) {
        return false;
    } catch (...) {
        return true;
    }
}

namespace detail {

inline void validate(const retry_policy& p, const std::string& prefix) {
    if (p.max_attempts < 1) {
        throw std::invalid_argument(prefix + "max_attempts must be >= 1");
    }
    if (p.initial_backoff.count() < 0) {
        throw std::invalid_argument(prefix + "initial_backoff must not be negative");
    }
    if (p.max_backoff.count() < 0) {
        throw std::invalid_argument(prefix + "max_backoff must not be negative");
    }
    if (!(p.multiplier >= 1.0) || !std::isfinite(p.multiplier)) {
        throw std::invalid_argument(prefix + "multiplier must be a finite number >= 1");
    }
}

}  // namespace detail

}  // namespace workerpool
