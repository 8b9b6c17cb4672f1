#pragma once

/// @file
/// Time in the pool: nanoseconds on the steady clock, and arithmetic on them that saturates
/// instead of overflowing (user limits may be `nanoseconds::max()`).

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

namespace workerpool::detail {

/// Nanoseconds on the steady clock; the currency of every deadline in the pool.
[[nodiscard]] inline std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// A time that never comes: "no deadline", "no wake-up planned".
inline constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

/// Returns `a + b` for `b >= 0`, or the largest value where that would overflow ("never").
[[nodiscard]] constexpr std::int64_t add_saturated(std::int64_t a, std::int64_t b) noexcept {
    return b > std::numeric_limits<std::int64_t>::max() - a
               ? std::numeric_limits<std::int64_t>::max()
               : a + b;
}

/// Returns `d` in nanoseconds, saturated at the limits of `std::int64_t` instead of overflowing
/// (`milliseconds::max()` has no nanosecond count).
template <class Rep, class Period>
[[nodiscard]] constexpr std::int64_t saturated_ns(std::chrono::duration<Rep, Period> d) noexcept {
    using source = std::chrono::duration<Rep, Period>;
    constexpr auto most = std::chrono::duration_cast<source>(std::chrono::nanoseconds::max());
    constexpr auto least = std::chrono::duration_cast<source>(std::chrono::nanoseconds::min());
    if (d >= most) {
        return std::numeric_limits<std::int64_t>::max();
    }
    if (d <= least) {
        return std::numeric_limits<std::int64_t>::min();
    }
    return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

/// Returns when a wait of `d` that starts now ends, or nothing if it is too long to represent
/// (a century or more: as good as for ever). Never overflows, whatever the duration's type.
template <class Rep, class Period>
[[nodiscard]] std::optional<std::chrono::steady_clock::time_point>
end_of_wait(std::chrono::duration<Rep, Period> d) noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (d <= std::chrono::duration<Rep, Period>::zero()) {
        return now;
    }
    constexpr auto century = std::chrono::hours(24 * 365 * 100);
    if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(century)) {
        return std::nullopt;
    }
    return now + std::chrono::ceil<std::chrono::steady_clock::duration>(d);
}

/// The steady-clock time point `ns` nanoseconds after the clock's epoch.
[[nodiscard]] inline std::chrono::steady_clock::time_point to_time_point(std::int64_t ns) noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::nanoseconds(ns)));
}

/// A steady-clock time point in nanoseconds since the epoch; the epoch itself stays 0 ("none").
[[nodiscard]] inline std::int64_t to_ns(std::chrono::steady_clock::time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace workerpool::detail
