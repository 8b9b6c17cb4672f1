// Options validation (issue 2): every out-of-range field makes the dispatcher's constructor throw
// std::invalid_argument whose message names that field, before any thread starts; values on the
// edge of each range are accepted; queue_shards 0 picks the ring count automatically.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using opts = workerpool::options<int>;

struct bad_case {
    const char* what;                 // a description for the report
    std::function<void(opts&)> edit;  // makes one field bad
    const char* field;                // what the message must name
};

// Returns the message of the std::invalid_argument that constructing a pool with `o` throws, or
// a description of what happened instead.
std::string construction_error(const opts& o) {
    try {
        dispatcher<int> pool([](int&) {}, o);
    } catch (const std::invalid_argument& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("<wrong exception type: ") + e.what() + ">";
    }
    return "<no exception>";
}

constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
constexpr double infinite = std::numeric_limits<double>::infinity();

}  // namespace

TEST_CASE("each bad option throws invalid_argument naming its field", "[options][unit]") {
    const std::vector<bad_case> cases{
        {"capacity 0", [](opts& o) { o.capacity = 0; }, "options.capacity"},
        {"queue_shards > capacity",
         [](opts& o) {
             o.capacity = 4;
             o.queue_shards = 5;
         },
         "options.queue_shards"},
        {"max_workers 0",
         [](opts& o) {
             o.min_workers = 0;
             o.max_workers = 0;
         },
         "options.max_workers"},
        {"min_workers > max_workers",
         [](opts& o) {
             o.min_workers = 3;
             o.max_workers = 2;
         },
         "options.min_workers"},
        {"scale_up_depth 0", [](opts& o) { o.scale_up_depth = 0; }, "options.scale_up_depth"},
        {"scale_down_ratio 0", [](opts& o) { o.scale_down_ratio = 0.0; },
         "options.scale_down_ratio"},
        {"scale_down_ratio 1.5", [](opts& o) { o.scale_down_ratio = 1.5; },
         "options.scale_down_ratio"},
        {"scale_down_ratio negative", [](opts& o) { o.scale_down_ratio = -0.5; },
         "options.scale_down_ratio"},
        {"scale_down_ratio NaN", [](opts& o) { o.scale_down_ratio = not_a_number; },
         "options.scale_down_ratio"},
        {"scale_down_cooldown negative", [](opts& o) { o.scale_down_cooldown = -1ns; },
         "options.scale_down_cooldown"},
        {"scale_interval 0", [](opts& o) { o.scale_interval = 0ms; }, "options.scale_interval"},
        {"scale_interval negative", [](opts& o) { o.scale_interval = -5ms; },
         "options.scale_interval"},
        {"idle_keep_alive 0", [](opts& o) { o.idle_keep_alive = 0ns; }, "options.idle_keep_alive"},
        {"idle_keep_alive negative", [](opts& o) { o.idle_keep_alive = -1s; },
         "options.idle_keep_alive"},
        {"default_timeout negative", [](opts& o) { o.default_timeout = -1ms; },
         "options.default_timeout"},
        {"stuck_grace negative", [](opts& o) { o.stuck_grace = -1ms; }, "options.stuck_grace"},
        {"spin_before_sleep negative", [](opts& o) { o.spin_before_sleep = -1us; },
         "options.spin_before_sleep"},
        {"destructor_grace negative", [](opts& o) { o.destructor_grace = -1s; },
         "options.destructor_grace"},
        {"retry.max_attempts 0", [](opts& o) { o.retry.max_attempts = 0; },
         "options.retry.max_attempts"},
        {"retry.initial_backoff negative", [](opts& o) { o.retry.initial_backoff = -1ms; },
         "options.retry.initial_backoff"},
        {"retry.max_backoff negative", [](opts& o) { o.retry.max_backoff = -1ms; },
         "options.retry.max_backoff"},
        {"retry.multiplier 0.5", [](opts& o) { o.retry.multiplier = 0.5; },
         "options.retry.multiplier"},
        {"retry.multiplier 0", [](opts& o) { o.retry.multiplier = 0.0; },
         "options.retry.multiplier"},
        {"retry.multiplier NaN", [](opts& o) { o.retry.multiplier = not_a_number; },
         "options.retry.multiplier"},
        {"retry.multiplier infinite", [](opts& o) { o.retry.multiplier = infinite; },
         "options.retry.multiplier"},
        {"priority_lanes 0", [](opts& o) { o.priority_lanes = 0; }, "options.priority_lanes"},
        {"priority_lanes 65", [](opts& o) { o.priority_lanes = 65; }, "options.priority_lanes"},
        {"priority_aging negative", [](opts& o) { o.priority_aging = -1ms; },
         "options.priority_aging"},
        {"rate_limit.per_second negative", [](opts& o) { o.rate_limit.per_second = -1.0; },
         "options.rate_limit.per_second"},
        {"rate_limit.per_second NaN", [](opts& o) { o.rate_limit.per_second = not_a_number; },
         "options.rate_limit.per_second"},
        {"rate_limit.per_second infinite", [](opts& o) { o.rate_limit.per_second = infinite; },
         "options.rate_limit.per_second"},
        {"rate_limit.burst 0 with a rate",
         [](opts& o) {
             o.rate_limit.per_second = 10.0;
             o.rate_limit.burst = 0;
         },
         "options.rate_limit.burst"},
        {"key_rate_limit.per_second negative", [](opts& o) { o.key_rate_limit.per_second = -0.5; },
         "options.key_rate_limit.per_second"},
        {"key_rate_limit.per_second NaN",
         [](opts& o) { o.key_rate_limit.per_second = not_a_number; },
         "options.key_rate_limit.per_second"},
        {"key_rate_limit.per_second infinite",
         [](opts& o) { o.key_rate_limit.per_second = infinite; },
         "options.key_rate_limit.per_second"},
        {"key_rate_limit.burst 0 with a rate",
         [](opts& o) {
             o.key_rate_limit.per_second = 10.0;
             o.key_rate_limit.burst = 0;
         },
         "options.key_rate_limit.burst"},
    };
    for (const bad_case& c : cases) {
        DYNAMIC_SECTION(c.what) {
            opts o;
            c.edit(o);
            const std::string message = construction_error(o);
            INFO("message: " << message);
            CHECK(message.find(c.field) != std::string::npos);
            // ... as the first field it mentions (min_workers' message also names max_workers).
            CHECK(message.find("options.") == message.find(c.field));
            CHECK(message.rfind("workerpool: ", 0) == 0);
        }
    }
}

TEST_CASE("values on the edge of each range are accepted", "[options][unit]") {
    opts o;
    o.capacity = 1;
    o.min_workers = 2;
    o.max_workers = 2;
    o.scale_up_depth = 1;
    o.scale_down_ratio = 1.0;
    o.scale_down_cooldown = 0ns;
    o.scale_interval = 1ms;
    o.idle_keep_alive = 1ns;
    o.default_timeout = 0ns;
    o.stuck_grace = 0ns;
    o.spin_before_sleep = 0ns;
    o.destructor_grace = 0ns;
    o.retry.max_attempts = 1;
    o.retry.initial_backoff = 0ns;
    o.retry.max_backoff = 0ns;
    o.retry.multiplier = 1.0;
    SECTION("min_workers == max_workers") {}
    SECTION("min_workers == 0") {
        o.min_workers = 0;
    }
    SECTION("the scheduler's edges: 64 lanes, no aging, limits off with a zero burst") {
        o.priority_lanes = 64;
        o.priority_aging = 0ns;
        o.rate_limit = {0.0, 0};
        o.key_rate_limit = {0.0, 0};
    }
    SECTION("the scheduler's edges: one lane, the smallest burst of a limit") {
        o.priority_lanes = 1;
        o.rate_limit = {1e-9, 1};
        o.key_rate_limit = {1e-9, 1};
    }
    CHECK(construction_error(o) == "<no exception>");
}

TEST_CASE("set_worker_limits rejects bad limits naming the field and keeps the old ones",
          "[options][unit]") {
    opts o;
    o.min_workers = 1;
    o.max_workers = 2;
    dispatcher<int> pool([](int&) {}, o);
    std::string message;
    try {
        pool.set_worker_limits(3, 2);
    } catch (const std::invalid_argument& e) {
        message = e.what();
    }
    CHECK(message.find("min_workers") != std::string::npos);
    message.clear();
    try {
        pool.set_worker_limits(0, 0);
    } catch (const std::invalid_argument& e) {
        message = e.what();
    }
    CHECK(message.find("max_workers") != std::string::npos);
    CHECK(pool.worker_count() == 1u);
}

TEST_CASE("queue_shards 0 picks one ring per worker, at most one per hardware thread and per 64 "
          "slots",
          "[options][unit]") {
    const auto hardware = static_cast<std::size_t>(std::thread::hardware_concurrency());
    const auto capped = [hardware](std::size_t n) {
        return hardware == 0 ? n : std::min(n, hardware);
    };
    // The rule itself.
    CHECK(workerpool::auto_queue_shards(1024, 1) == 1u);
    CHECK(workerpool::auto_queue_shards(1024, 3) == capped(3));
    CHECK(workerpool::auto_queue_shards(1024, 1000) == capped(16));  // 1024 / 64 slots
    CHECK(workerpool::auto_queue_shards(64, 8) == 1u);               // one ring of 64
    CHECK(workerpool::auto_queue_shards(127, 8) == 1u);
    CHECK(workerpool::auto_queue_shards(128, 8) == capped(2));
    CHECK(workerpool::auto_queue_shards(1, 8) == 1u);  // never 0, even below 64 slots
    CHECK(workerpool::auto_queue_shards(1 << 20, 1 << 20) == capped(std::size_t{1} << 20));

    // What the dispatcher builds from it, and that an explicit count is kept.
    opts o;
    o.capacity = 256;
    o.min_workers = 1;
    o.max_workers = 4;
    CHECK(o.queue_shards == 0u);  // the default
    {
        dispatcher<int> pool([](int&) {}, o);
        CHECK(pool.queue_shards() == capped(4));
        CHECK(pool.capacity() == 256u);
    }
    o.max_workers = 1;
    {
        dispatcher<int> pool([](int&) {}, o);
        CHECK(pool.queue_shards() == 1u);
    }
    o.max_workers = 4;
    o.queue_shards = 1;
    {
        dispatcher<int> pool([](int&) {}, o);
        CHECK(pool.queue_shards() == 1u);
    }
    o.queue_shards = 3;
    {
        dispatcher<int> pool([](int&) {}, o);
        CHECK(pool.queue_shards() == 3u);
    }
}

TEST_CASE("a capacity whose rings together exceed memory is refused before anything is allocated",
          "[options][regression][unit]") {
    // Bug: the "absurd capacity" check was per ring. capacity = 1 << 40 with 1 or 2 rings gave
    // invalid_argument, but with queue_shards = 256 (what the default picks on a 256-thread
    // machine) each ring passed it, and the constructor asked for 512 GiB per ring (bad_alloc)
    // or touched ring after ring until the out-of-memory killer came. The check is now on the
    // whole pool, against max_capacity(): 1 TiB and the machine's physical memory.
    const std::size_t shards = GENERATE(std::size_t{1}, std::size_t{2}, std::size_t{256});
    opts o;
    o.queue_shards = shards;
    SECTION("1 << 40 slots") {
        o.capacity = std::size_t{1} << 40;
    }
    SECTION("one slot more than fits") {
        using ring =
            workerpool::bounded_queue<int>;  // a bound for any slot size: int's is smallest
        o.capacity = ring::max_capacity() + 1;
    }
    INFO("capacity " << o.capacity << ", " << shards << " rings");
    const std::string message = construction_error(o);
    CHECK_THAT(message, Catch::Matchers::Contains("options.capacity"));
    CHECK_THAT(message, Catch::Matchers::Contains("too large"));
}

TEST_CASE("bounded_queue refuses a capacity above max_capacity()", "[bounded_queue][unit]") {
    using ring = workerpool::bounded_queue<int>;
    CHECK(ring::max_capacity() > 0u);
    CHECK(ring::max_capacity() * ring::slot_size() <= (std::uint64_t{1} << 40));
    CHECK_THROWS_AS(ring(ring::max_capacity() + 1), std::invalid_argument);
    CHECK_THROWS_AS(ring(0), std::invalid_argument);
}
