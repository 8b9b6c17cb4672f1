// stream_producer against the shared test server: one entry, a pipelined batch, MAXLEN ~, bad
// input, refusals, and a reconnection after its connection was killed.

#include <workerpool/redis/stream_producer.hpp>

#include "redis/redis_util.hpp"
#include "support/catch.hpp"

#include <stdexcept>
#include <string>
#include <vector>

using workerpool::test::redis_client;
using workerpool::test::unique_name;
namespace wr = workerpool::redis;

namespace {

wr::producer_options options_for(const std::string& stream) {
    wr::producer_options o;
    o.port = workerpool::test::redis_port();
    o.stream = stream;
    return o;
}

}  // namespace

TEST_CASE("redis producer: add appends one entry and returns its id", "[redis][producer]") {
    redis_client r;
    const std::string stream = unique_name("produce-one");
    wr::stream_producer p(options_for(stream));
    const std::string id = p.add({{"url", "https://example.com/1"}, {"kind", "page"}});
    const std::vector<wr::stream_entry> all = r.range(stream);
    REQUIRE(all.size() == 1);
    CHECK(all[0].id == id);
    CHECK(all[0].fields ==
          wr::stream_producer::fields{{"url", "https://example.com/1"}, {"kind", "page"}});
    r.del({stream});
}

TEST_CASE("redis producer: add_batch appends every entry in order, pipelined",
          "[redis][producer]") {
    redis_client r;
    const std::string stream = unique_name("produce-batch");
    wr::stream_producer p(options_for(stream));
    std::vector<wr::stream_producer::fields> batch;
    for (int i = 0; i < 1000; ++i) {
        batch.push_back({{"n", std::to_string(i)}});
    }
    const std::vector<std::string> ids = p.add_batch(batch);
    const std::vector<wr::stream_entry> all = r.range(stream);
    REQUIRE(all.size() == 1000);
    REQUIRE(ids.size() == 1000);
    for (std::size_t i = 0; i < all.size(); ++i) {
        CHECK(all[i].id == ids[i]);
        CHECK(*all[i].find("n") == std::to_string(i));
    }
    CHECK(p.add_batch({}).empty());
    r.del({stream});
}

TEST_CASE("redis producer: max_len caps the stream at about that many entries (MAXLEN ~)",
          "[redis][producer]") {
    redis_client r;
    const std::string stream = unique_name("produce-capped");
    wr::producer_options o = options_for(stream);
    o.max_len = 100;
    wr::stream_producer p(o);
    std::vector<wr::stream_producer::fields> batch(2000, {{"k", "v"}});
    const std::vector<std::string> ids = p.add_batch(batch);
    const long long length = r.integer({"XLEN", stream});
    // "~" trims whole internal nodes (100 entries each by default): at least 100 stay, never
    // everything, and the newest entry is always kept.
    CHECK(length >= 100);
    CHECK(length <= 300);
    CHECK(r.range(stream).back().id == ids.back());
    r.del({stream});
}

TEST_CASE("redis producer: bad options, empty entries, refusals and an unreachable server are "
          "clear errors",
          "[redis][producer]") {
    redis_client r;
    const std::string stream = unique_name("produce-errors");
    wr::producer_options o = options_for(stream);
    wr::producer_options bad = o;
    bad.stream.clear();
    CHECK_THROWS_WITH(wr::stream_producer(bad), Catch::Contains("producer_options.stream"));
    bad = o;
    bad.username = "alice";
    CHECK_THROWS_WITH(wr::stream_producer(bad), Catch::Contains("producer_options.username"));
    bad = o;
    bad.port = 1;
    CHECK_THROWS_AS(wr::stream_producer(bad), wr::redis_error);

    wr::stream_producer p(o);
    CHECK_THROWS_AS(p.add({}), std::invalid_argument);
    CHECK_THROWS_AS(p.add_batch({{{"k", "v"}}, {}}), std::invalid_argument);
    CHECK(r.integer({"EXISTS", stream}) == 0);  // nothing of that batch was sent

    (void)r.run({"SET", stream, "not a stream"});
    CHECK_THROWS_WITH(p.add({{"k", "v"}}), Catch::Contains("WRONGTYPE"));
    CHECK_THROWS_WITH(p.add_batch({{{"k", "v"}}, {{"k", "w"}}}),
                      Catch::Contains("added 0 of 2") && Catch::Contains("WRONGTYPE"));
    r.del({stream});
    CHECK_FALSE(p.add({{"k", "v"}}).empty());  // refusals leave the connection usable
    r.del({stream});
}

TEST_CASE("redis producer: a call after the connection was killed reconnects",
          "[redis][producer]") {
    redis_client r;
    const std::string stream = unique_name("produce-reconnect");
    wr::stream_producer p(options_for(stream));
    (void)p.add({{"n", "0"}});
    const std::string clients = wr::detail::reply_text(r.run({"CLIENT", "LIST"}).get());
    for (std::size_t at = clients.find("name=workerpool-producer "); at != std::string::npos;
         at = clients.find("name=workerpool-producer ", at + 1)) {
        const std::size_t line = clients.rfind("id=", at);
        (void)r.run(
            {"CLIENT", "KILL", "ID", clients.substr(line + 3, clients.find(' ', line) - line - 3)});
    }
    // The first call finds the connection dead (the kill arrives as a closed socket): it may
    // fail, and the next one reconnects.
    try {
        (void)p.add({{"n", "1"}});
    } catch (const wr::redis_error&) {
    }
    CHECK_FALSE(p.add({{"n", "2"}}).empty());
    CHECK(r.integer({"XLEN", stream}) >= 2);
    r.del({stream});
}
