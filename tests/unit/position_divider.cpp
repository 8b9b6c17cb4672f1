// detail::position_divider against the hardware's `/` and `%`: every divisor up to 5,000 at the
// edges of its laps and at the top of the range, every power of two up to 2^40 (the largest ring)
// and its neighbours, and random divisors of every size with random positions below 2^63. A
// ring turns each position into a slot and a lap with it, so one wrong quotient would put an
// element in the wrong slot or turn.

#include <workerpool/detail/position_divider.hpp>

#include "support/catch.hpp"

#include <cstdint>
#include <random>
#include <vector>

namespace {

using workerpool::detail::position_divider;

constexpr std::uint64_t top = position_divider::max_dividend;

// How many of `dividends` `divider` gets wrong (quotient or remainder).
std::uint64_t wrong(const position_divider& divider, const std::vector<std::uint64_t>& dividends) {
    const std::uint64_t d = divider.divisor();
    std::uint64_t bad = 0;
    for (const std::uint64_t n : dividends) {
        const auto r = divider.divide(n);
        bad += (r.quotient != n / d || r.remainder != n % d) ? 1U : 0U;
    }
    return bad;
}

// The positions where a quotient changes, and the top of the range.
std::vector<std::uint64_t> edges(std::uint64_t d) {
    const std::uint64_t last_lap = top / d * d;
    return {0,
            1,
            d - 1,
            d,
            d + 1,
            2 * d - 1,
            2 * d,
            3 * d - 1,
            top,
            top - 1,
            top - d,
            last_lap,
            last_lap - 1,
            last_lap - d,
            last_lap + (top - last_lap)};
}

}  // namespace

TEST_CASE("position_divider: every divisor up to 5000, at its lap edges and the range's top",
          "[position_divider][unit]") {
    std::uint64_t bad = 0;
    for (std::uint64_t d = 1; d <= 5000; ++d) {
        bad += wrong(position_divider(d), edges(d));
    }
    CHECK(bad == 0);
}

TEST_CASE("position_divider: powers of two up to 2^40 and their neighbours",
          "[position_divider][unit]") {
    std::mt19937_64 rng(7);
    std::uint64_t bad = 0;
    for (unsigned s = 1; s <= 40; ++s) {
        const std::uint64_t p = std::uint64_t{1} << s;
        for (const std::uint64_t d : {p - 1, p, p + 1}) {
            std::vector<std::uint64_t> n = edges(d);
            for (int i = 0; i < 64; ++i) {
                n.push_back(rng() >> 1);
            }
            bad += wrong(position_divider(d), n);
        }
    }
    CHECK(bad == 0);
}

TEST_CASE("position_divider: random divisors of every size, random positions below 2^63",
          "[position_divider][unit]") {
    std::mt19937_64 rng(11);
    std::uint64_t bad = 0;
    std::uint64_t checked = 0;
    for (int i = 0; i < 20000; ++i) {
        std::uint64_t d = (rng() >> (rng() % 64)) % (std::uint64_t{1} << 40);
        d = d == 0 ? 1 : d;
        std::vector<std::uint64_t> n = edges(d);
        for (int j = 0; j < 16; ++j) {
            const std::uint64_t r = rng() >> 1;
            n.push_back(r);
            n.push_back(r % (4 * d + 1));
            n.push_back(top - r % (d + 1));
        }
        bad += wrong(position_divider(d), n);
        checked += n.size();
    }
    CHECK(checked > 1'000'000u);
    CHECK(bad == 0);
}
