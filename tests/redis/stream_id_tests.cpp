// The consumer's id bookkeeping without a server: parsing and formatting stream ids, and the flat
// id set (insertions, lookups, deletions that shift probe runs back, growth).

#include <workerpool/redis/detail/stream_id.hpp>

#include "support/catch.hpp"

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <utility>

using workerpool::redis::detail::id_set;
using workerpool::redis::detail::parse_id;
using workerpool::redis::detail::stream_id;

TEST_CASE("redis ids: parse and format round-trip, and malformed ids are refused",
          "[redis][unit]") {
    for (const std::string text : {"0-1", "1700000000000-0", "1796416531493-45",
                                   "18446744073709551615-18446744073709551615"}) {
        const auto id = parse_id(text);
        REQUIRE(id.has_value());
        CHECK(workerpool::redis::detail::to_string(*id) == text);
    }
    CHECK(parse_id("1700000000000-7") == stream_id{1700000000000, 7});
    for (const std::string bad :
         {"", "-", "1-", "-1", "1", "1-2-3", "x-1", "1-x", "1 -2", "18446744073709551616-0"}) {
        CHECK_FALSE(parse_id(bad).has_value());
    }
}

TEST_CASE("redis ids: the id set agrees with std::set through random inserts and erases",
          "[redis][unit]") {
    id_set ids(4);
    std::set<std::pair<std::uint64_t, std::uint64_t>> model;
    std::mt19937_64 rng(12345);
    // Few distinct values, so that probe runs collide, wrap and shift back often.
    std::uniform_int_distribution<std::uint64_t> value(0, 300);
    for (int step = 0; step < 200000; ++step) {
        const stream_id id{value(rng) / 20, value(rng) % 20};
        const auto key = std::make_pair(id.ms, id.seq);
        if (rng() % 3 == 0) {
            CHECK(ids.erase(id) == (model.erase(key) == 1));
        } else {
            CHECK(ids.insert(id) == model.insert(key).second);
        }
        if (step % 997 == 0) {
            REQUIRE(ids.size() == model.size());
            for (std::uint64_t ms = 0; ms <= 15; ++ms) {
                for (std::uint64_t seq = 0; seq < 20; ++seq) {
                    CHECK(ids.contains({ms, seq}) == (model.count({ms, seq}) == 1));
                }
            }
        }
    }
    CHECK(ids.items().size() == model.size());
    ids.clear();
    CHECK(ids.size() == 0);
    CHECK_FALSE(ids.contains({0, 0}));
}
