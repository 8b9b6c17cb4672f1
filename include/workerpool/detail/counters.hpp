#pragma once

/// @file
/// `detail::counter_set`: the outcome counters one worker keeps (a single writer, no locked
/// instruction), and `detail::counter_totals`, their sums for `stats()`.

#include <workerpool/detail/cache_line.hpp>
#include <workerpool/stats.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace workerpool::detail {

/// What a worker counts; one `stats_snapshot` field each.
enum class counter : std::uint8_t {
    completed,
    failed,
    retried,
    timed_out,
    late,
    cancelled,
    expired
};

/// How many kinds of `counter` there are.
inline constexpr std::size_t counter_kinds = 7;

/// A counter with a single writer: plain load + store, no locked instruction on the hot path.
struct owned_counter {
    std::atomic<std::uint64_t> value{0};

    /// Adds one. Only the owning thread may call it.
    // Always inlined, as counter_set::bump: GCC 12 prices the two atomic accesses as calls, and
    // once a translation unit has spent its inline-unit-growth the worker called this (see
    // docs/design.md, "The hot path").
    [[gnu::always_inline]] void bump() noexcept {
        // [C1] release: publishes the request's outcome (the handler's effects) to an `ended`
        // count read by wait_idle ([C2]); a plain store on x86. Only the owning worker writes.
        value.store(value.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    /// The count, for statistics.
    [[nodiscard]] std::uint64_t get() const noexcept {
        return value.load(std::memory_order_relaxed);  // statistics only
    }
    /// The count, seeing every effect published before the bumps it counts.
    [[nodiscard]] std::uint64_t get_acquire() const noexcept {
        return value.load(std::memory_order_acquire);  // [C2] pairs with [C1]
    }
};

/// Sums of counters, by kind: of workers that were reaped, or of a `stats()` snapshot in the
/// making. A plain value; whoever shares one guards it.
struct counter_totals {
    std::array<std::uint64_t, counter_kinds> values{};

    /// The sum for `c`.
    [[nodiscard]] std::uint64_t operator[](counter c) const noexcept {
        return values[static_cast<std::size_t>(c)];
    }
    /// Adds `o`, kind by kind.
    counter_totals& operator+=(const counter_totals& o) noexcept {
        for (std::size_t i = 0; i < counter_kinds; ++i) {
            values[i] += o.values[i];
        }
        return *this;
    }
    /// Writes each sum into its field of `s`.
    void fill(stats_snapshot& s) const noexcept {
        s.completed = (*this)[counter::completed];
        s.failed = (*this)[counter::failed];
        s.retried = (*this)[counter::retried];
        s.timed_out = (*this)[counter::timed_out];
        s.late = (*this)[counter::late];
        s.cancelled = (*this)[counter::cancelled];
        s.expired = (*this)[counter::expired];
    }
};

/// One worker's counters, on a cache line of their own so that `stats()` readers never slow the
/// worker. Thread safety: `bump` on the owning worker only; reads from any thread.
class alignas(cache_line) counter_set {
public:
    /// Adds one to `c`. Owning worker only.
    [[gnu::always_inline]] void bump(counter c) noexcept {
        values_[static_cast<std::size_t>(c)].bump();
    }
    /// The count of `c`, for statistics.
    [[nodiscard]] std::uint64_t get(counter c) const noexcept {
        return values_[static_cast<std::size_t>(c)].get();
    }
    /// The count of `c`, with the outcomes it counts (see [C2]).
    [[nodiscard]] std::uint64_t get_acquire(counter c) const noexcept {
        return values_[static_cast<std::size_t>(c)].get_acquire();
    }
    /// Adds every count into `t`.
    void add_to(counter_totals& t) const noexcept {
        for (std::size_t i = 0; i < counter_kinds; ++i) {
            t.values[i] += values_[i].get();
        }
    }

private:
    std::array<owned_counter, counter_kinds> values_;
};

static_assert(sizeof(counter_set) == cache_line,
              "a worker's counters fill exactly one cache line: one more would need a second");

}  // namespace workerpool::detail
