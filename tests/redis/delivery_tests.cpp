// Dead letters that cannot be written, entries too big for a Lua call, binary values, delivery
// counts and max_deliveries on every path, and claiming speed: against the shared test server
// (ctest starts it; see scripts/redis-local.sh). Each test audits from Redis: XPENDING, the
// dead-letter stream, and a per-id record of handler runs.

#include <workerpool/redis/stream_consumer.hpp>

#include "redis/audit.hpp"
#include "redis/redis_util.hpp"
#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using workerpool::test::audit;
using workerpool::test::eventually;
using workerpool::test::redis_client;
using workerpool::test::unique_name;
namespace wr = workerpool::redis;
using kind = wr::consumer_event_kind;

namespace {

wr::consumer_options options_for(const std::string& stream, const std::string& consumer = "c1") {
    return workerpool::test::consumer_options_for(workerpool::test::redis_port(), stream, consumer);
}

// Delivery count of `id` in group "g", from XPENDING (-1 if not pending).
long long deliveries(redis_client& r, const std::string& stream, const std::string& id) {
    auto p = r.run({"XPENDING", stream, "g", id, id, "1"});
    if (p->type != REDIS_REPLY_ARRAY || p->elements != 1) {
        return -1;
    }
    return p->element[0]->element[3]->integer;
}

}  // namespace

TEST_CASE("redis: a dead letter that cannot be written leaves its entry pending, says why, and "
          "is written once the dead-letter stream is usable",
          "[redis][dead_letter]") {
    redis_client r;
    const std::string stream = unique_name("dead-wrongtype");
    wr::consumer_options o = options_for(stream);
    (void)r.run({"SET", stream + ":dead", "not a stream"});  // a key of the wrong type
    std::vector<std::string> ids;
    for (int i = 0; i < 4; ++i) {
        ids.push_back(r.xadd(stream, {{"n", std::to_string(i)}}));
    }
    workerpool::test::event_log events;
    o.on_event = events.observer();
    workerpool::test::run_record runs;
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            runs.ran(e.id);
            throw workerpool::permanent_error("cannot handle " + e.id);
        },
        o);
    // Each ran once and its dead letter was refused (an error reply, whatever else happened).
    REQUIRE(eventually([&] { return runs.total() == 4 && c.stats().redis_errors >= 1; }));
    // Nothing was acknowledged without its dead letter: all four are still pending.
    CHECK(r.pending(stream, "g") == 4);
    REQUIRE(eventually([&] {
        return c.stats().dead_letter_failures >= 4 && events.entries(kind::dead_letter_failed) >= 4;
    }));
    CHECK(r.pending(stream, "g") == 4);
    CHECK(c.stats().acknowledged == 0);
    CHECK(c.stats().dead_lettered == 0);
    CHECK(events.mentions("WRONGTYPE"));

    r.del({stream + ":dead"});  // the operator fixes it: the retries now succeed
    REQUIRE(eventually([&] { return c.stats().dead_lettered == 4; }));
    REQUIRE(eventually([&] { return r.pending(stream, "g") == 0; }));
    const auto a = audit(r, stream, "g", c.dead_letter_stream(), runs.runs());
    CHECK(a.lost.empty());
    CHECK(a.dead == 4);
    CHECK(a.dead_twice == 0);
    CHECK(a.duplicates == 0);  // retried writes, not retried runs
    (void)c.stop(1s);
    r.del({stream, c.dead_letter_stream()});
}

TEST_CASE("redis: an entry with more fields than a Lua call can take is dead-lettered whole",
          "[redis][dead_letter]") {
    redis_client r;
    const std::string stream = unique_name("dead-wide");
    constexpr int fields = 5000;
    std::vector<std::string> wide;
    for (int e = 0; e < 6; ++e) {
        std::vector<std::string> cmd{"XADD", stream, "*"};
        for (int f = 0; f < fields; ++f) {
            cmd.push_back("f" + std::to_string(f));
            cmd.push_back(std::to_string(e) + ":" + std::to_string(f));
        }
        wide.push_back(workerpool::redis::detail::reply_text(r.run(cmd).get()));
        (void)r.xadd(stream, {{"good", std::to_string(e)}});
    }
    wr::consumer_options o = options_for(stream);
    workerpool::test::run_record runs;
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            runs.ran(e.id);
            if (e.fields.size() == fields) {
                throw workerpool::permanent_error("too wide");
            }
        },
        o);
    REQUIRE(eventually([&] {
        const wr::consumer_stats s = c.stats();
        return s.dead_lettered == 6 && s.acknowledged == 6;
    }));
    CHECK(r.pending(stream, "g") == 0);
    const std::vector<wr::stream_entry> dead = r.range(c.dead_letter_stream());
    REQUIRE(dead.size() == 6);
    for (std::size_t e = 0; e < dead.size(); ++e) {
        CHECK(*dead[e].find("dl:id") == wide[e]);
        REQUIRE(dead[e].fields.size() == fields + 5);  // dl:id, reason, attempts, error, consumer
        CHECK(dead[e].fields[5].first == "f0");
        CHECK(dead[e].fields.back().second == std::to_string(e) + ":" + std::to_string(fields - 1));
    }
    CHECK(c.stats().dead_letter_failures == 0);
    (void)c.stop(1s);
    r.del({stream, c.dead_letter_stream()});
}

TEST_CASE("redis: 1 MiB binary values reach the handler and the dead-letter stream byte for byte",
          "[redis][dead_letter]") {
    redis_client r;
    const std::string stream = unique_name("binary");
    std::string blob(1 << 20, '\0');
    for (std::size_t i = 0; i < blob.size(); ++i) {
        blob[i] = static_cast<char>((i * 131 + i / 256) & 0xff);  // every byte value, NULs too
    }
    const std::string good = r.xadd(stream, {{"kind", "good"}, {"blob", blob}});
    const std::string bad = r.xadd(stream, {{"kind", "bad"}, {"blob", blob}});
    std::atomic<int> exact{0};
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            if (*e.find("blob") == blob) {
                exact.fetch_add(1);
            }
            if (*e.find("kind") == "bad") {
                throw workerpool::permanent_error("bad");
            }
        },
        options_for(stream));
    REQUIRE(
        eventually([&] { return c.stats().acknowledged == 1 && c.stats().dead_lettered == 1; }));
    CHECK(exact.load() == 2);
    const std::vector<wr::stream_entry> dead = r.range(c.dead_letter_stream());
    REQUIRE(dead.size() == 1);
    CHECK(*dead[0].find("dl:id") == bad);
    CHECK(*dead[0].find("blob") == blob);
    CHECK(r.pending(stream, "g") == 0);
    (void)c.stop(1s);
    r.del({stream, c.dead_letter_stream()});
}

TEST_CASE("redis: a claimed entry counts one delivery, not one per step of taking it",
          "[redis][deliveries]") {
    redis_client r;
    const std::string stream = unique_name("count-once");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    const std::string id = r.xadd(stream, {{"n", "0"}});
    // "ghost" got it (delivery 1) and went away long ago.
    (void)r.run({"XREADGROUP", "GROUP", "g", "ghost", "COUNT", "1", "STREAMS", stream, ">"});
    (void)r.run({"XCLAIM", stream, "g", "ghost", "0", id, "IDLE", "600000", "JUSTID"});
    REQUIRE(deliveries(r, stream, id) == 1);
    wr::consumer_options o = options_for(stream);
    o.claim_idle = 100ms;
    workerpool::test::gate g;
    wr::stream_consumer c([&](wr::stream_entry&) { g.wait(); }, o);
    workerpool::test::finally open_at_end([&g] { g.open(); });  // before c is destroyed
    REQUIRE(eventually([&] { return g.waiting() == 1; }));
    // Claimed at start-up, then the own pending list is read: one delivery, counted once.
    CHECK(deliveries(r, stream, id) == 2);
    g.open();
    REQUIRE(eventually([&] { return c.stats().acknowledged == 1; }));
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: max_deliveries stops an entry left pending by this consumer name",
          "[redis][deliveries]") {
    redis_client r;
    const std::string stream = unique_name("own-poison");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    const std::string poison = r.xadd(stream, {{"n", "0"}});
    const std::string once = r.xadd(stream, {{"n", "1"}});
    const std::string fresh = r.xadd(stream, {{"n", "2"}});
    // Three processes named "c1" in turn took the first entry and died; the second died once.
    (void)r.run({"XREADGROUP", "GROUP", "g", "c1", "COUNT", "2", "STREAMS", stream, ">"});
    (void)r.run({"XCLAIM", stream, "g", "c1", "0", poison});
    (void)r.run({"XCLAIM", stream, "g", "c1", "0", poison});
    REQUIRE(deliveries(r, stream, poison) == 3);
    wr::consumer_options o = options_for(stream);
    o.claim_idle = 60s;  // nothing is idle that long: only the own pending list re-delivers
    o.max_deliveries = 3;
    workerpool::test::run_record runs;
    wr::stream_consumer c([&](wr::stream_entry& e) { runs.ran(e.id); }, o);
    REQUIRE(eventually([&] {
        const wr::consumer_stats s = c.stats();
        return s.dead_lettered == 1 && s.acknowledged == 2;
    }));
    CHECK(runs.runs() == std::map<std::string, int>{{once, 1}, {fresh, 1}});
    const std::vector<wr::stream_entry> dead = r.range(c.dead_letter_stream());
    REQUIRE(dead.size() == 1);
    CHECK(*dead[0].find("dl:id") == poison);
    CHECK(*dead[0].find("dl:reason") == "too_many_deliveries");
    CHECK(r.pending(stream, "g") == 0);
    (void)c.stop(1s);
    r.del({stream, c.dead_letter_stream()});
}

TEST_CASE("redis: an entry's last allowed delivery runs alone, so a crash is charged to it only",
          "[redis][deliveries]") {
    redis_client r;
    const std::string stream = unique_name("alone");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    const std::string suspect = r.xadd(stream, {{"n", "0"}});
    (void)r.run({"XREADGROUP", "GROUP", "g", "c1", "COUNT", "1", "STREAMS", stream, ">"});
    (void)r.run({"XCLAIM", stream, "g", "c1", "0", suspect});  // delivered twice, max is 3
    for (int i = 1; i < 20; ++i) {
        (void)r.xadd(stream, {{"n", std::to_string(i)}});
    }
    wr::consumer_options o = options_for(stream);
    o.claim_idle = 60s;
    o.max_deliveries = 3;
    o.pool.max_workers = 4;
    o.pool.min_workers = 4;
    std::atomic<int> running{0};
    std::atomic<int> beside_suspect{0};  // handlers that overlapped the suspect's run
    std::atomic<bool> suspect_running{false};
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            const int others = running.fetch_add(1);
            if (e.id == suspect) {
                suspect_running.store(true);
                beside_suspect.fetch_add(others);
                std::this_thread::sleep_for(20ms);  // a window for anything started beside it
                suspect_running.store(false);
            } else if (suspect_running.load()) {
                beside_suspect.fetch_add(1);
            }
            running.fetch_sub(1);
        },
        o);
    REQUIRE(eventually([&] { return c.stats().acknowledged == 20; }));
    CHECK(beside_suspect.load() == 0);
    CHECK(r.pending(stream, "g") == 0);
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: claiming follows XAUTOCLAIM's cursor while there is room, not one batch per "
          "claim period",
          "[redis][claim]") {
    redis_client r;
    const std::string stream = unique_name("claim-fast");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    constexpr int n = 1000;
    for (int i = 0; i < n; ++i) {
        (void)r.xadd(stream, {{"n", std::to_string(i)}});
    }
    // A consumer that died holding everything, long ago.
    (void)r.run({"XREADGROUP", "GROUP", "g", "ghost", "COUNT", "100000", "STREAMS", stream, ">"});
    std::vector<std::string> claim{"XCLAIM", stream, "g", "ghost", "0"};
    for (const wr::stream_entry& e : r.range(stream)) {
        claim.push_back(e.id);
    }
    claim.insert(claim.end(), {"IDLE", "600000", "JUSTID"});
    (void)r.run(claim);
    wr::consumer_options o = options_for(stream);
    o.claim_idle = 60s;  // one claim period every 15 s: the first one must take them all
    o.max_in_flight = 64;
    o.batch = 64;
    workerpool::test::run_record runs;
    wr::stream_consumer c([&](wr::stream_entry& e) { runs.ran(e.id); }, o);
    // Time is the behaviour here: well before the second claim period (15 s).
    REQUIRE(eventually([&] { return c.stats().acknowledged == n; }, 12s));
    CHECK(c.stats().claimed == n);
    CHECK(r.pending(stream, "g") == 0);
    const auto a = audit(r, stream, "g", c.dead_letter_stream(), runs.runs());
    CHECK(a.lost.empty());
    CHECK(a.duplicates == 0);
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: the default dead-letter stream keeps the stream's Cluster hash tag",
          "[redis][dead_letter]") {
    redis_client r;
    const std::string tag = "{" + unique_name("tag") + "}";
    for (const std::string& stream : {tag, tag + ":jobs", "jobs:" + tag}) {
        wr::consumer_options o = options_for(stream);
        wr::stream_consumer c([](wr::stream_entry&) {}, o);
        // The key's hash tag is the text between its first '{' and the next '}'.
        CHECK(c.dead_letter_stream() == stream + ":dead");
        const std::string& d = c.dead_letter_stream();
        CHECK(d.substr(d.find('{'), d.find('}') - d.find('{') + 1) == tag);
        (void)c.stop(1s);
        r.del({stream});
    }
}

TEST_CASE("redis: an acknowledgement does not wait for a long read of a quiet stream",
          "[redis][ack]") {
    redis_client r;
    const std::string stream = unique_name("ack-latency");
    wr::consumer_options o = options_for(stream);
    o.block = 5s;  // a read with nothing held waits this long for new entries
    o.ack_delay = 5ms;
    wr::stream_consumer c([](wr::stream_entry&) {}, o);
    (void)r.xadd(stream, {{"n", "0"}});
    // Time is the behaviour here: the read sent after this entry holds it, so it blocks for
    // ack_delay, not for block; a generous bound well under block.
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(eventually([&] { return c.stats().acknowledged == 1; }, 10s));
    CHECK(std::chrono::steady_clock::now() - start < 2500ms);
    (void)c.stop(1s);
    r.del({stream});
}

TEST_CASE("redis: entries of varying shapes arrive intact, batch after batch", "[redis]") {
    // The reader reuses the memory of finished entries for new ones: a reused entry must carry
    // exactly the new entry's fields, however many the old one had.
    redis_client r;
    const std::string stream = unique_name("shapes");
    auto fields_of = [](int i) {
        std::vector<std::pair<std::string, std::string>> f{{"n", std::to_string(i)}};
        for (int k = 1; k < i % 6; ++k) {
            f.emplace_back("f" + std::to_string(k),
                           std::string(static_cast<std::size_t>((i * 7 + k) % 50), 'x'));
        }
        return f;
    };
    constexpr int n = 600;
    for (int i = 0; i < n; ++i) {
        std::vector<std::string> cmd{"XADD", stream, "*"};
        for (const auto& [f, v] : fields_of(i)) {
            cmd.push_back(f);
            cmd.push_back(v);
        }
        (void)r.run(cmd);
    }
    wr::consumer_options o = options_for(stream);
    o.batch = 37;
    std::atomic<int> wrong{0};
    wr::stream_consumer c(
        [&](wr::stream_entry& e) {
            if (e.fields != fields_of(std::stoi(*e.find("n")))) {
                wrong.fetch_add(1);
            }
        },
        o);
    REQUIRE(eventually([&] { return c.stats().acknowledged == n; }));
    CHECK(wrong.load() == 0);
    (void)c.stop(1s);
    r.del({stream});
}
