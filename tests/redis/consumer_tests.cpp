// The Redis Streams consumer against a real redis-server (ctest starts one; see
// scripts/redis-local.sh).

#include <workerpool/redis/stream_consumer.hpp>

#include "redis/redis_util.hpp"
#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using workerpool::test::eventually;
using workerpool::test::redis_client;
using workerpool::test::unique_name;
namespace wr = workerpool::redis;

namespace {

wr::consumer_options options_for(const std::string& stream, const std::string& consumer = "c1") {
    return workerpool::test::consumer_options_for(workerpool::test::redis_port(), stream, consumer);
}

// Pending entries of the whole group, from the summary form of XPENDING.
long long group_pending(redis_client& r, const std::string& stream) {
    return r.pending(stream, "g");
}

}  // namespace

TEST_CASE("redis: bad options are rejected with the field's name", "[redis]") {
    wr::consumer_options o = options_for(unique_name("bad"));
    auto rejects = [&](const wr::consumer_options& bad, const std::string& field) {
        try {
            wr::stream_consumer c([](wr::stream_entry&) {}, bad);
        } catch (const std::invalid_argument& e) {
            return std::string(e.what()).find("consumer_options." + field) != std::string::npos;
        }
        return false;
    };
    auto with = [&](auto change) {
        wr::consumer_options copy = o;
        change(copy);
        return copy;
    };
    CHECK(rejects(with([](auto& x) { x.stream.clear(); }), "stream"));
    CHECK(rejects(with([](auto& x) { x.group.clear(); }), "group"));
    CHECK(rejects(with([](auto& x) { x.consumer.clear(); }), "consumer"));
    CHECK(rejects(with([](auto& x) { x.port = 0; }), "port"));
    CHECK(rejects(with([](auto& x) { x.batch = 0; }), "batch"));
    CHECK(rejects(with([](auto& x) { x.block = 0ms; }), "block"));
    CHECK(rejects(with([](auto& x) { x.ack_delay = 0ms; }), "ack_delay"));
    CHECK(rejects(with([](auto& x) { x.claim_idle = -1ms; }), "claim_idle"));
    CHECK(rejects(with([](auto& x) { x.username = "alice"; }), "username"));
    CHECK(rejects(with([](auto& x) { x.dead_letter_stream = x.stream; }), "dead_letter_stream"));
    CHECK(rejects(with([](auto& x) { x.reconnect_max = 1ms; }), "reconnect_max"));
    CHECK(rejects(with([](auto& x) { x.max_in_flight = x.pool.capacity + 1; }), "max_in_flight"));
    // The pool's own options are validated too, with the pool's message.
    wr::consumer_options bad_pool = with([](auto& x) { x.pool.capacity = 0; });
    CHECK_THROWS_WITH(wr::stream_consumer([](wr::stream_entry&) {}, bad_pool),
                      Catch::Contains("options.capacity"));
}

TEST_CASE("redis: an unreachable server is a clear error naming the address", "[redis]") {
    wr::consumer_options o = options_for(unique_name("unreachable"));
    o.port = 1;  // nothing listens on port 1
    o.connect_timeout = 500ms;
    CHECK_THROWS_WITH(wr::stream_consumer([](wr::stream_entry&) {}, o),
                      Catch::Contains("cannot connect to 127.0.0.1:1"));
}

TEST_CASE("redis: a missing stream or group is an error unless create_group is set", "[redis]") {
    redis_client r;
    const std::string stream = unique_name("missing");
    wr::consumer_options o = options_for(stream);
    o.create_group = false;
    CHECK_THROWS_WITH(wr::stream_consumer([](wr::stream_entry&) {}, o),
                      Catch::Contains("'" + stream + "'") && Catch::Contains("create_group"));

    r.xadd(stream, {{"k", "v"}});  // the stream exists now, the group still does not
    CHECK_THROWS_WITH(wr::stream_consumer([](wr::stream_entry&) {}, o),
                      Catch::Contains("has no group 'g'"));

    o.create_group = true;
    {
        wr::stream_consumer c([](wr::stream_entry&) {}, o);
    }
    o.create_group = false;  // the group exists now
    CHECK_NOTHROW(wr::stream_consumer([](wr::stream_entry&) {}, o));
    r.del({stream});
}

TEST_CASE("redis: each entry runs once and is acknowledged after its handler returns", "[redis]") {
    redis_client r;
    const std::string stream = unique_name("ack");
    constexpr int n = 200;
    for (int i = 0; i < n; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}, {"kind", "page"}});
    }
    std::mutex m;
    std::multiset<std::string> seen;
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            REQUIRE(e.find("kind") != nullptr);
            std::lock_guard lock(m);
            seen.insert(*e.find("n"));
        },
        options_for(stream));
    REQUIRE(eventually([&] { return c.stats().acknowledged == n; }));
    CHECK(group_pending(r, stream) == 0);
    const wr::consumer_stop_report report = c.stop(1s);
    CHECK(report.left_pending == 0);
    CHECK(report.unacknowledged == 0);
    std::lock_guard lock(m);
    CHECK(seen.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        CHECK(seen.count(std::to_string(i)) == 1);
    }
    r.del({stream});
}

TEST_CASE("redis: a request that fails for good goes to the dead-letter stream once, with its "
          "history",
          "[redis]") {
    redis_client r;
    const std::string stream = unique_name("dead");
    for (int i = 0; i < 30; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}, {"bad", i % 10 == 0 ? "yes" : "no"}});
    }
    wr::consumer_options o = options_for(stream);
    o.pool.retry.max_attempts = 3;
    std::atomic<int> calls{0};
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            calls.fetch_add(1);
            if (*e.find("bad") == "yes") {
                throw std::runtime_error("cannot parse entry " + *e.find("n"));
            }
        },
        o);
    REQUIRE(eventually([&] {
        const wr::consumer_stats s = c.stats();
        return s.acknowledged == 27 && s.dead_lettered == 3;
    }));
    CHECK(group_pending(r, stream) == 0);
    CHECK(calls.load() == 27 + 3 * 3);
    const std::vector<wr::stream_entry> dead = r.range(c.dead_letter_stream());
    REQUIRE(dead.size() == 3);
    std::set<std::string> numbers;
    for (const wr::stream_entry& d : dead) {
        CHECK(*d.find("dl:reason") == "error");
        CHECK(*d.find("dl:attempts") == "3");
        CHECK(*d.find("dl:consumer") == "c1");
        CHECK(*d.find("bad") == "yes");
        CHECK(*d.find("dl:error") == "cannot parse entry " + *d.find("n"));
        numbers.insert(*d.find("n"));
    }
    CHECK(numbers == std::set<std::string>{"0", "10", "20"});
    (void)c.stop(1s);
    r.del({stream, c.dead_letter_stream()});
}

TEST_CASE("redis: reading stops at max_in_flight, so the backlog stays in Redis", "[redis]") {
    redis_client r;
    const std::string stream = unique_name("backpressure");
    for (int i = 0; i < 100; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    wr::consumer_options o = options_for(stream);
    o.max_in_flight = 5;
    o.batch = 3;
    workerpool::test::gate g;
    wr::stream_consumer c([&](wr::stream_entry&) { g.wait(); }, o);
    REQUIRE(eventually([&] { return c.stats().in_flight == 5; }));
    // Held for a while: the consumer must not read past its bound.
    std::this_thread::sleep_for(100ms);
    CHECK(c.stats().read == 5);
    CHECK(r.pending(stream, "g", "c1") == 5);
    g.open();
    REQUIRE(eventually([&] { return c.stats().acknowledged == 100; }));
    CHECK(group_pending(r, stream) == 0);
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: stop leaves unfinished entries pending, and the same consumer name re-runs "
          "them",
          "[redis]") {
    redis_client r;
    const std::string stream = unique_name("restart");
    for (int i = 0; i < 20; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    wr::consumer_options o = options_for(stream);
    o.pool.max_workers = 1;
    o.pool.min_workers = 1;
    o.max_in_flight = 10;
    workerpool::test::gate g;
    std::size_t left = 0;
    {
        wr::stream_consumer c(
            [&](wr::stream_entry&, const std::stop_token& st) {
                g.wait();
                if (st.stop_requested()) {
                    throw std::runtime_error("cancelled");
                }
            },
            o);
        REQUIRE(eventually([&] { return c.stats().in_flight == 10 && g.waiting() == 1; }));
        std::thread opener([&] {
            std::this_thread::sleep_for(50ms);
            g.open();  // the running handler returns during the grace, the rest stay queued
        });
        const wr::consumer_stop_report report = c.stop(0ms);
        opener.join();
        left = report.left_pending;
        CHECK(report.unacknowledged == 0);
        CHECK(left >= 9);
        CHECK(r.pending(stream, "g", "c1") == static_cast<long long>(left));
    }
    std::atomic<int> rerun{0};
    wr::stream_consumer again([&](wr::stream_entry&) { rerun.fetch_add(1); }, o);
    REQUIRE(eventually([&] { return group_pending(r, stream) == 0 && again.stats().read >= 10; }));
    REQUIRE(eventually([&] { return again.stats().acknowledged == 20 - (10 - left); }));
    CHECK(rerun.load() == static_cast<int>(20 - (10 - left)));
    (void)again.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: entries idle on a consumer that went away are claimed and run", "[redis]") {
    redis_client r;
    const std::string stream = unique_name("claim");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    for (int i = 0; i < 10; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    // "ghost" reads every entry and never acknowledges any: a consumer that died.
    (void)r.run({"XREADGROUP", "GROUP", "g", "ghost", "COUNT", "100", "STREAMS", stream, ">"});
    REQUIRE(r.pending(stream, "g", "ghost") == 10);
    wr::consumer_options o = options_for(stream);
    o.claim_idle = 200ms;
    std::atomic<std::size_t> claimed_events{0};
    o.on_event = [&](const wr::consumer_event& e) {
        if (e.kind == wr::consumer_event_kind::claimed) {
            claimed_events.fetch_add(e.count);
        }
    };
    wr::stream_consumer c([](wr::stream_entry&) {}, o);
    REQUIRE(eventually([&] { return c.stats().acknowledged == 10; }));
    CHECK(c.stats().claimed == 10);
    CHECK(claimed_events.load() == 10);
    CHECK(group_pending(r, stream) == 0);
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: a live consumer's slow entries are not claimed by others", "[redis]") {
    redis_client r;
    const std::string stream = unique_name("refresh");
    for (int i = 0; i < 4; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    // claim_idle 400 ms: "slow" refreshes every 100 ms, so only a reader starved of the CPU for
    // 300 ms (a loaded 2-core machine running other tests) could lose its entries.
    wr::consumer_options o = options_for(stream, "slow");
    o.claim_idle = 400ms;
    workerpool::test::gate g;
    wr::stream_consumer slow([&](wr::stream_entry&) { g.wait(); }, o);
    REQUIRE(eventually([&] { return slow.stats().in_flight == 4; }));
    std::atomic<int> stolen{0};
    wr::consumer_options other_options = options_for(stream, "other");
    other_options.claim_idle = 400ms;
    wr::stream_consumer other([&](wr::stream_entry&) { stolen.fetch_add(1); }, other_options);
    // Several claim periods pass while "slow" holds its entries longer than claim_idle.
    std::this_thread::sleep_for(1200ms);
    CHECK(other.stats().claimed == 0);
    CHECK(stolen.load() == 0);
    g.open();
    REQUIRE(eventually([&] { return slow.stats().acknowledged == 4; }));
    (void)slow.stop(1s);
    (void)other.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: after the connection is killed the consumer reconnects and goes on", "[redis]") {
    redis_client r;
    const std::string stream = unique_name("reconnect");
    const std::string name = "reconnecting-" + std::to_string(::getpid());
    wr::consumer_options o = options_for(stream, name);
    o.reconnect_min = 10ms;
    o.reconnect_max = 50ms;
    std::atomic<int> connected{0};
    std::atomic<int> disconnected{0};
    o.on_event = [&](const wr::consumer_event& e) {
        if (e.kind == wr::consumer_event_kind::connected) {
            connected.fetch_add(1);
        } else if (e.kind == wr::consumer_event_kind::disconnected) {
            disconnected.fetch_add(1);
        }
    };
    std::atomic<int> runs{0};
    wr::stream_consumer c([&](wr::stream_entry&) { runs.fetch_add(1); }, o);
    for (int i = 0; i < 20; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    REQUIRE(eventually([&] { return c.stats().acknowledged == 20; }));
    // Kill the consumer's connection, found by its name.
    const std::string clients =
        workerpool::redis::detail::reply_text(r.run({"CLIENT", "LIST"}).get());
    const std::size_t at = clients.find("name=workerpool:" + name + " ");
    REQUIRE(at != std::string::npos);
    const std::size_t line = clients.rfind("id=", at);
    REQUIRE(line != std::string::npos);
    const std::string id = clients.substr(line + 3, clients.find(' ', line) - line - 3);
    CHECK(r.integer({"CLIENT", "KILL", "ID", id}) == 1);
    for (int i = 20; i < 40; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    REQUIRE(eventually([&] { return c.stats().acknowledged == 40; }));
    CHECK(c.stats().reconnects >= 1);
    CHECK(connected.load() >= 1);
    CHECK(disconnected.load() >= 1);
    CHECK(runs.load() == 40);
    CHECK(group_pending(r, stream) == 0);
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: an entry already delivered max_deliveries times is dead-lettered, not run",
          "[redis]") {
    redis_client r;
    const std::string stream = unique_name("poison");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    const std::string poison = r.xadd(stream, {{"n", "0"}});
    const std::string once = r.xadd(stream, {{"n", "1"}});
    // Three consumers in turn took the first entry and went away; the second was delivered twice.
    (void)r.run({"XREADGROUP", "GROUP", "g", "ghost-1", "COUNT", "2", "STREAMS", stream, ">"});
    (void)r.run({"XCLAIM", stream, "g", "ghost-2", "0", poison, once});
    (void)r.run({"XCLAIM", stream, "g", "ghost-3", "0", poison});
    wr::consumer_options o = options_for(stream);
    o.claim_idle = 100ms;
    o.max_deliveries = 3;
    std::mutex m;
    std::vector<std::string> ran;
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            std::lock_guard lock(m);
            ran.push_back(e.id);
        },
        o);
    REQUIRE(eventually([&] {
        const wr::consumer_stats s = c.stats();
        return s.dead_lettered == 1 && s.acknowledged == 1;
    }));
    CHECK(group_pending(r, stream) == 0);
    {
        std::lock_guard lock(m);
        CHECK(ran == std::vector<std::string>{once});
    }
    const std::vector<wr::stream_entry> dead = r.range(c.dead_letter_stream());
    REQUIRE(dead.size() == 1);
    CHECK(*dead[0].find("dl:id") == poison);
    CHECK(*dead[0].find("dl:reason") == "too_many_deliveries");
    CHECK(*dead[0].find("dl:attempts") == "0");
    CHECK(*dead[0].find("n") == "0");
    (void)c.stop(1s);
    r.del({stream, c.dead_letter_stream()});
}

TEST_CASE("redis: the pool's on_success sees each entry, may move out of it, and a throw from it "
          "does not stop the acknowledgement",
          "[redis]") {
    redis_client r;
    const std::string stream = unique_name("on-success");
    for (int i = 0; i < 20; ++i) {
        r.xadd(stream, {{"n", std::to_string(i)}});
    }
    wr::consumer_options o = options_for(stream);
    std::mutex m;
    std::vector<wr::stream_entry> kept;
    o.pool.on_success = [&](wr::stream_entry& e) {
        const bool odd = std::stoi(*e.find("n")) % 2 == 1;
        {
            std::lock_guard lock(m);
            kept.push_back(std::move(e));  // takes the entry, id and all
        }
        if (odd) {
            throw std::runtime_error("observer failed");
        }
    };
    wr::stream_consumer c([](wr::stream_entry&) {}, o);
    REQUIRE(eventually([&] { return c.stats().acknowledged == 20; }));
    CHECK(group_pending(r, stream) == 0);
    CHECK(c.stats().pool.callback_errors == 10);
    (void)c.stop(1s);
    std::lock_guard lock(m);
    REQUIRE(kept.size() == 20);
    std::set<std::string> numbers;
    for (const wr::stream_entry& e : kept) {
        numbers.insert(*e.find("n"));
    }
    CHECK(numbers.size() == 20);
    r.del({stream});
}
