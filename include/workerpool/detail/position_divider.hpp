#pragma once

/// @file
/// `detail::position_divider`: quotient and remainder of a queue position by the ring's capacity,
/// fixed at construction, with a multiply and a shift instead of a hardware divide.

#include <bit>
#include <cstdint>

namespace workerpool::detail {

/// Divides positions (below 2^63) by a divisor fixed at construction.
///
/// A ring turns every position into a slot index (`n % d`) and a lap (`n / d`) on every push and
/// pop; a 64-bit `div` takes tens of cycles, the multiply below a few. With `l = ceil(log2 d)`
/// and `m = ceil(2^(63+l) / d)` (which fits in 64 bits), `floor(n * m / 2^(63+l)) == n / d` for
/// every `n < 2^63` (Granlund and Montgomery, "Division by invariant integers using
/// multiplication", 1994, theorem 4.2: `m * d - 2^(63+l) < d <= 2^l`). The product's high word
/// is taken of `2n` (which fits, as `n < 2^63`), so the shift left is `l`, in [0, 63], and a
/// divisor of 1 needs no special case. Without a 128-bit integer type it divides.
///
/// Thread safety: immutable after construction.
class position_divider {
public:
    /// The largest dividend `divide` accepts.
    static constexpr std::uint64_t max_dividend = (std::uint64_t{1} << 63) - 1;

    /// What `divide` returns.
    struct result {
        std::uint64_t quotient;   ///< `n / d`
        std::uint64_t remainder;  ///< `n % d`
    };

    /// A divider by `d`. Pre: `d >= 1`.
    explicit position_divider(std::uint64_t d) noexcept
        : divisor_(d), shift_(static_cast<unsigned>(std::bit_width(d - 1))), multiplier_(make(d)) {}

    /// `n / d` and `n % d`. Pre: `n <= max_dividend`.
    [[nodiscard]] result divide(std::uint64_t n) const noexcept {
#if defined(__SIZEOF_INT128__)
        const auto high =
            static_cast<std::uint64_t>((static_cast<wide>(n << 1) * multiplier_) >> 64);
        const std::uint64_t q = high >> shift_;
#else
        const std::uint64_t q = n / divisor_;
#endif
        return {q, n - q * divisor_};
    }

    /// The divisor.
    [[nodiscard]] std::uint64_t divisor() const noexcept {
        return divisor_;
    }

private:
#if defined(__SIZEOF_INT128__)
    __extension__ using wide = unsigned __int128;

    // ceil(2^(63 + l) / d), below 2^64 (and 2^63 when d is a power of two).
    static std::uint64_t make(std::uint64_t d) noexcept {
        const auto l = static_cast<unsigned>(std::bit_width(d - 1));
        const wide numerator = wide{1} << (63 + l);
        return static_cast<std::uint64_t>((numerator + d - 1) / d);
    }
#else
    static std::uint64_t make(std::uint64_t) noexcept {
        return 0;
    }
#endif

    std::uint64_t divisor_;
    unsigned shift_;
    std::uint64_t multiplier_;
};

}  // namespace workerpool::detail
