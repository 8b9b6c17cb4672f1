#pragma once

/// @file
/// `detail::token_rate`: a token bucket kept as one time stamp (the generic cell rate algorithm):
/// whether an attempt may start now, and when the next one may; `detail::kept_buckets`: the
/// buckets of keys that drained, kept until full.

#include <workerpool/detail/clock.hpp>
#include <workerpool/options.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace workerpool::detail {

/// A rate limit's constants. A bucket's state is one `std::int64_t`, its "theoretical arrival
/// time" (`tat`): a token is there at `now` if `now >= tat - tolerance`; taking one moves `tat` to
/// `max(tat, now) + interval`. A bucket whose `tat` is not after `now` is full, and forgetting it
/// (starting again from 0) changes nothing. Pure: no clock, no lock; the caller passes the time.
struct token_rate {
    std::int64_t interval_ns = 0;   // time per token; 0 = no limit
    std::int64_t tolerance_ns = 0;  // (burst - 1) intervals: how far ahead of time one may start
    std::size_t burst = 0;          // tokens the bucket holds (0: no limit)

    /// The constants of `s` (saturated; at least 1 ns per token when on).
    [[nodiscard]] static token_rate of(const rate_limit_settings& s) noexcept {
        token_rate r;
        if (s.per_second > 0.0) {
            constexpr double ns_per_second = 1e9;
            constexpr double largest = 4.0e18;  // far from overflow when added to a time
            const double interval = std::clamp(ns_per_second / s.per_second, 1.0, largest);
            r.interval_ns = static_cast<std::int64_t>(interval);
            r.burst = s.burst;
            const double tolerance = interval * static_cast<double>(s.burst - 1);
            r.tolerance_ns = static_cast<std::int64_t>(std::min(tolerance, largest));
        }
        return r;
    }

    /// Whether this is a limit at all.
    [[nodiscard]] bool on() const noexcept { return interval_ns != 0; }

    /// When the bucket whose state is `tat` next has a token (at or before `now`: it has one).
    [[nodiscard]] std::int64_t next_token(std::int64_t tat) const noexcept {
        return tat - tolerance_ns;
    }

    /// Takes a token from the bucket `tat` at `now` if it has one; returns whether it did.
    bool take(std::int64_t& tat, std::int64_t now) const noexcept {
        if (!on()) {
            return true;
        }
        if (now < next_token(tat)) {
            return false;
        }
        tat = add_saturated(std::max(tat, now), interval_ns);
        return true;
    }

    /// Whether the bucket `tat` is full at `now` (it may be forgotten).
    [[nodiscard]] static bool full(std::int64_t tat, std::int64_t now) noexcept {
        return tat <= now;
    }
};

/// The buckets of keys that drained, kept aside until full (a key back sooner must not start with
/// a full one); the full ones are dropped every 100 ms (a pass over all of them).
///
/// Thread safety: none; its owner's lock guards it (the scheduler's).
class kept_buckets {
public:
    /// Keeps key `key`'s bucket `tat` unless it is full at `now` (out of memory: forgotten; the
    /// key starts again with a full bucket).
    void keep(std::uint64_t key, std::int64_t tat, std::int64_t now) noexcept {
        if (token_rate::full(tat, now)) {
            return;
        }
        try {
            if (recent_.empty()) {
                next_prune_ns_ = add_saturated(now, prune_period_ns);
            }
            recent_[key] = tat;
        } catch (...) {
            // Out of memory: see above.
        }
    }

    /// Moves key `key`'s kept bucket, if any, into `tat`.
    void restore(std::uint64_t key, std::int64_t& tat) noexcept {
        if (recent_.empty()) {
            return;
        }
        if (const auto r = recent_.find(key); r != recent_.end()) {
            tat = r->second;
            recent_.erase(r);
        }
    }

    /// Drops the buckets full at `now`, once per period.
    void prune(std::int64_t now) noexcept {
        if (recent_.empty() || now < next_prune_ns_) {
            return;
        }
        next_prune_ns_ = add_saturated(now, prune_period_ns);
        std::erase_if(recent_, [now](const auto& kv) { return token_rate::full(kv.second, now); });
    }

    /// When `prune` must run next (`never`: nothing kept).
    [[nodiscard]] std::int64_t next_wake() const noexcept {
        return recent_.empty() ? never : next_prune_ns_;
    }

private:
    static constexpr std::int64_t prune_period_ns = 100'000'000;
    std::unordered_map<std::uint64_t, std::int64_t> recent_;  // by key: its bucket's tat
    std::int64_t next_prune_ns_ = 0;                          // when prune drops full ones
};

}  // namespace workerpool::detail
