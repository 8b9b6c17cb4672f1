#pragma once

#include <workerpool/stats.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace workerpool::detail {

/// Log-linear bucketing of nanosecond durations (HdrHistogram-style, 3 sub-bucket bits):
/// values below 16 ns get a bucket each; above, each power of two is split into 8 buckets, so a
/// bucket spans at most 12.5 % of its values. Durations up to 2^48 ns (~78 hours); longer ones
/// land in the last bucket.
struct histogram_layout {
    static constexpr unsigned sub_bits = 3;
    static constexpr unsigned exact = 16;  // values [0, 16) have one bucket each
    static constexpr unsigned max_exponent = 48;
    static constexpr std::size_t buckets = exact + (max_exponent - 4) * (1U << sub_bits);

    /// Returns the bucket of `ns` (negative values count as 0).
    [[nodiscard]] static constexpr std::size_t index(std::int64_t ns) noexcept {
        if (ns < static_cast<std::int64_t>(exact)) {
            return ns < 0 ? 0 : static_cast<std::size_t>(ns);
        }
        const auto v = static_cast<std::uint64_t>(ns);
        const auto e = static_cast<unsigned>(std::bit_width(v)) - 1;  // >= 4
        if (e >= max_exponent) {
            return buckets - 1;
        }
        const auto sub = static_cast<std::size_t>((v >> (e - sub_bits)) & ((1U << sub_bits) - 1));
        return exact + (e - 4) * (std::size_t{1} << sub_bits) + sub;
    }

    /// Returns the largest value that falls in bucket `i` (what a percentile reports).
    [[nodiscard]] static constexpr std::int64_t upper_bound(std::size_t i) noexcept {
        if (i < exact) {
            return static_cast<std::int64_t>(i);
        }
        const std::size_t k = i - exact;
        const unsigned e = static_cast<unsigned>(k >> sub_bits) + 4;
        const std::uint64_t sub = k & ((1U << sub_bits) - 1);
        const std::uint64_t base = (std::uint64_t{1} << e) + (sub << (e - sub_bits));
        return static_cast<std::int64_t>(base + (std::uint64_t{1} << (e - sub_bits)) - 1);
    }
};

/// Bucket counts that can be added, subtracted and asked for percentiles. Plain values: used for
/// snapshots and merging, never shared between threads without a lock.
struct histogram_counts {
    std::array<std::uint64_t, histogram_layout::buckets> counts{};

    histogram_counts& operator+=(const histogram_counts& o) noexcept {
        for (std::size_t i = 0; i < counts.size(); ++i) {
            counts[i] += o.counts[i];
        }
        return *this;
    }

    /// Returns the counts of `*this` minus those of an earlier snapshot `base`.
    [[nodiscard]] histogram_counts since(const histogram_counts& base) const noexcept {
        histogram_counts d;
        for (std::size_t i = 0; i < counts.size(); ++i) {
            d.counts[i] = counts[i] >= base.counts[i] ? counts[i] - base.counts[i] : 0;
        }
        return d;
    }

    /// Returns p50 / p90 / p99 / max (bucket upper bounds) and the sample count.
    [[nodiscard]] latency_summary summary() const noexcept {
        latency_summary s;
        for (const std::uint64_t c : counts) {
            s.samples += c;
        }
        if (s.samples == 0) {
            return s;
        }
        const auto at = [this, &s](double q) {
            const auto rank =
                static_cast<std::uint64_t>(q * static_cast<double>(s.samples - 1)) + 1;
            std::uint64_t seen = 0;
            for (std::size_t i = 0; i < counts.size(); ++i) {
                seen += counts[i];
                if (seen >= rank) {
                    return std::chrono::nanoseconds(histogram_layout::upper_bound(i));
                }
            }
            return std::chrono::nanoseconds(histogram_layout::upper_bound(counts.size() - 1));
        };
        s.p50 = at(0.50);
        s.p90 = at(0.90);
        s.p99 = at(0.99);
        s.max = at(1.0);
        return s;
    }
};

/// A histogram with a single writer thread (a worker) and any number of readers: recording is a
/// plain load and store of one counter, no locked instruction and no allocation.
class owned_histogram {
public:
    /// Records one duration. Only the owning thread may call it.
    void record(std::int64_t ns) noexcept {
        std::atomic<std::uint64_t>& c = counts_[histogram_layout::index(ns)];
        // relaxed: statistics only; a single writer, readers tolerate a stale count
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    /// Adds the current counts into `out`. Any thread.
    void add_to(histogram_counts& out) const noexcept {
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            out.counts[i] += counts_[i].load(std::memory_order_relaxed);  // statistics only
        }
    }

private:
    std::array<std::atomic<std::uint64_t>, histogram_layout::buckets> counts_{};
};

}  // namespace workerpool::detail
