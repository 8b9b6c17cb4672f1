// The consumer under real server faults, each test on a redis-server of its own
// (server_process.hpp): a busy script (BUSY), a restart that loads its data slowly (LOADING),
// restarts with AOF (SHUTDOWN, SIGTERM), killed connections, a paused server, a server that
// refuses reconnections for a while, and a server that requires a password. Each audits from
// Redis itself: no entry lost, none run twice on a consumer that was never killed, nothing left
// pending.

#include <workerpool/redis/stream_consumer.hpp>
#include <workerpool/redis/stream_producer.hpp>

#include "redis/audit.hpp"
#include "redis/redis_util.hpp"
#include "redis/server_process.hpp"
#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <chrono>
#include <csignal>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using workerpool::test::audit;
using workerpool::test::eventually;
using workerpool::test::redis_client;
using workerpool::test::server_process;
namespace wr = workerpool::redis;
using kind = wr::consumer_event_kind;

namespace {

constexpr const char* stream = "jobs";

wr::consumer_options options_for(const server_process& srv, const std::string& consumer = "c1") {
    return workerpool::test::consumer_options_for(srv.port(), stream, consumer);
}

// Whether a fresh connection's PING gets an error starting with `prefix` (BUSY, LOADING).
bool answers_with(const server_process& srv, const std::string& prefix) {
    wr::detail::connection c("127.0.0.1", srv.port(), 500ms, 2s);
    const wr::detail::reply_ptr p = c.command({"PING"});
    return p != nullptr && wr::detail::reply_text(p.get()).rfind(prefix, 0) == 0;
}

// The id of the consumer's connection in CLIENT LIST ("workerpool:<consumer>"), or empty.
std::string client_id(redis_client& r, const std::string& consumer) {
    const std::string clients = wr::detail::reply_text(r.run({"CLIENT", "LIST"}).get());
    const std::size_t at = clients.find("name=workerpool:" + consumer + " ");
    if (at == std::string::npos) {
        return {};
    }
    const std::size_t line = clients.rfind("id=", at);
    return clients.substr(line + 3, clients.find(' ', line) - line - 3);
}

// Every entry ran exactly once, nothing is pending, nothing was dead-lettered.
void check_exactly_once(redis_client& r, const wr::stream_consumer& c,
                        const workerpool::test::run_record& runs, std::size_t n) {
    const auto a = audit(r, stream, "g", c.dead_letter_stream(), runs.runs());
    CHECK(a.entries == n);
    CHECK(a.lost.empty());
    CHECK(a.ran == n);
    CHECK(a.pending == 0);
    CHECK(a.dead == 0);
    CHECK(a.duplicates == 0);
}

// A consumer that records its events and its handler runs. With `gated`, each handler first
// waits at `gate`, so the consumer holds what it read until `gate.open()`.
struct watched_consumer {
    explicit watched_consumer(wr::consumer_options o, bool gated = false)
        : gated_(gated), consumer(
                             [this](wr::stream_entry& e) {
                                 if (gated_) {
                                     gate.wait();
                                 }
                                 runs.ran(e.id);
                             },
                             observed(std::move(o))) {}

    // Whether it holds `held` entries, two handlers waiting at the gate.
    [[nodiscard]] bool full(std::size_t held) const {
        return consumer.stats().in_flight == held && gate.waiting() == 2;
    }

private:
    const bool gated_;

public:
    workerpool::test::event_log events;
    workerpool::test::gate gate;
    workerpool::test::run_record runs;
    wr::stream_consumer consumer;
    // Opens the gate when destroyed, before the consumer is.
    struct gate_opener {
        explicit gate_opener(workerpool::test::gate& g) : gate_(g) {}
        gate_opener(const gate_opener&) = delete;
        gate_opener& operator=(const gate_opener&) = delete;
        ~gate_opener() { gate_.open(); }
        workerpool::test::gate& gate_;
    } open_at_end{gate};

private:
    wr::consumer_options observed(wr::consumer_options o) {
        o.on_event = events.observer();
        return o;
    }
};

// A fresh client of `srv`, after creating the group and appending `n` entries.
redis_client stream_of(const server_process& srv, int n) {
    redis_client r = srv.client();
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    for (int i = 0; i < n; ++i) {
        (void)r.xadd(stream, {{"n", std::to_string(i)}});
    }
    return r;
}

}  // namespace

TEST_CASE("redis faults: acknowledgements a BUSY server refuses are kept and sent when it "
          "answers again",
          "[redis][faults]") {
    // claim_idle 0: a forgotten acknowledgement would stay pending for ever; > 0: the consumer
    // would claim its own forgotten entries back and run them twice.
    const auto claim_idle = GENERATE(0ms, 300ms);
    server_process srv;
    redis_client r = stream_of(srv, 300);
    wr::consumer_options o = options_for(srv);
    o.claim_idle = claim_idle;
    o.max_in_flight = 50;
    o.batch = 10;
    watched_consumer held(o, true);
    REQUIRE(eventually([&] { return held.full(50); }));

    // A script that never ends keeps the server BUSY for every other client until SCRIPT KILL.
    r.run({"CONFIG", "SET", "busy-reply-threshold", "50"});
    std::jthread script([port = srv.port()] {
        redis_client s(port);
        (void)s.run({"EVAL", "while true do end", "0"});  // ends with an error at SCRIPT KILL
    });
    REQUIRE(eventually([&] { return answers_with(srv, "BUSY"); }));
    held.gate.open();  // the 50 held entries finish while the server is busy: XACK is refused
    REQUIRE(eventually([&] { return held.runs.total() == 50 && held.events.mentions("BUSY"); }));
    CHECK(held.events.count(kind::disconnected) >= 1);
    (void)r.run({"SCRIPT", "KILL"});
    script.join();

    REQUIRE(eventually([&] { return held.consumer.stats().acknowledged == 300; }, 30s));
    REQUIRE(eventually([&] { return r.pending(stream, "g") == 0; }));
    check_exactly_once(r, held.consumer, held.runs, 300);
    (void)held.consumer.stop(1s);
}

TEST_CASE("redis faults: acknowledgements owed while a restarted server is LOADING are kept and "
          "sent when it is up",
          "[redis][faults]") {
    const auto claim_idle = GENERATE(0ms, 300ms);
    server_process srv;
    redis_client r = stream_of(srv, 100);
    // Keys that make the next start load slowly (--key-load-delay: microseconds per key).
    for (int k = 0; k < 2000; k += 500) {
        std::vector<std::string> mset{"MSET"};
        for (int i = k; i < k + 500; ++i) {
            mset.push_back("filler:" + std::to_string(i));
            mset.push_back("x");
        }
        (void)r.run(mset);
    }
    wr::consumer_options o = options_for(srv);
    o.claim_idle = claim_idle;
    o.max_in_flight = 20;
    o.batch = 10;
    watched_consumer held(o, true);
    REQUIRE(eventually([&] { return held.full(20); }));

    srv.shutdown("SAVE");
    srv.restart({"--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"});
    REQUIRE(answers_with(srv, "LOADING"));
    held.gate.open();  // the 20 held entries finish while the server loads
    REQUIRE(eventually([&] { return held.runs.total() == 20; }));

    REQUIRE(eventually([&] { return held.consumer.stats().acknowledged == 100; }, 60s));
    redis_client after = srv.client();
    REQUIRE(eventually([&] { return after.pending(stream, "g") == 0; }));
    check_exactly_once(after, held.consumer, held.runs, 100);
    CHECK(held.events.count(kind::disconnected) >= 1);
    (void)held.consumer.stop(1s);
}

TEST_CASE("redis faults: a server restarted with AOF (SHUTDOWN or SIGTERM) mid-run loses "
          "nothing and runs nothing twice",
          "[redis][faults]") {
    const bool by_signal = GENERATE(false, true);
    server_process srv({"--appendonly", "yes", "--appendfsync", "always"});
    constexpr int n = 2000;
    redis_client r = stream_of(srv, n);
    wr::consumer_options o = options_for(srv);
    o.claim_idle = 500ms;
    o.max_in_flight = 40;
    o.batch = 20;
    watched_consumer w(o);
    REQUIRE(eventually([&] { return w.runs.total() >= n / 4; }));
    if (by_signal) {
        srv.signal(SIGTERM);
    } else {
        srv.shutdown();
    }
    srv.restart();
    redis_client after = srv.client();
    REQUIRE(eventually(
        [&] { return w.runs.runs().size() == n && w.consumer.stats().in_flight == 0; }, 60s));
    REQUIRE(eventually([&] { return after.pending(stream, "g") == 0; }));
    check_exactly_once(after, w.consumer, w.runs, n);
    // Every outage ends with one connected event (the last may still be under way: a LOADING
    // reply right after reconnecting starts another).
    CHECK(eventually(
        [&] { return w.events.count(kind::disconnected) == w.events.count(kind::connected); }));
    (void)w.consumer.stop(1s);
}

TEST_CASE("redis faults: connections killed again and again (CLIENT KILL): one outage each, "
          "nothing lost or run twice",
          "[redis][faults]") {
    server_process srv;
    constexpr int n = 2000;
    redis_client r = stream_of(srv, n);
    wr::consumer_options o = options_for(srv);
    o.max_in_flight = 40;
    o.batch = 20;
    watched_consumer w(o);
    constexpr std::size_t kills = 8;
    for (std::size_t k = 0; k < kills; ++k) {
        std::string id;
        REQUIRE(eventually([&] {
            id = client_id(r, "c1");
            return !id.empty() && w.events.count(kind::connected) == k;
        }));
        CHECK(r.integer({"CLIENT", "KILL", "ID", id}) == 1);
        REQUIRE(eventually([&] { return w.events.count(kind::connected) == k + 1; }));
    }
    REQUIRE(eventually(
        [&] { return w.runs.runs().size() == n && w.consumer.stats().in_flight == 0; }, 60s));
    check_exactly_once(r, w.consumer, w.runs, n);
    CHECK(w.events.count(kind::disconnected) == kills);
    CHECK(w.consumer.stats().reconnects == kills);
    (void)w.consumer.stop(1s);
}

TEST_CASE("redis faults: an outage is one disconnected event, however many reconnection attempts "
          "fail",
          "[redis][faults]") {
    server_process srv;
    redis_client r = stream_of(srv, 0);
    wr::consumer_options o = options_for(srv);
    o.reconnect_min = 5ms;
    o.reconnect_max = 20ms;
    watched_consumer w(o);
    srv.shutdown("SAVE");
    REQUIRE(eventually([&] { return w.events.count(kind::disconnected) == 1; }));
    {
        // Where the server was, something accepts each connection and closes it: every
        // reconnection attempt fails, and is counted.
        workerpool::test::refusing_listener refuser(srv.port());
        REQUIRE(eventually([&] { return refuser.accepted() >= 5; }));
    }
    srv.restart();
    REQUIRE(eventually([&] { return w.events.count(kind::connected) == 1; }));
    CHECK(w.events.count(kind::disconnected) == 1);
    redis_client after = srv.client();
    const std::string id = after.xadd(stream, {{"n", "0"}});
    REQUIRE(eventually([&] { return w.consumer.stats().acknowledged == 1; }));
    CHECK(w.runs.runs() == std::map<std::string, int>{{id, 1}});
    (void)w.consumer.stop(1s);
}

TEST_CASE("redis faults: a paused server (CLIENT PAUSE) slower than command_timeout loses "
          "nothing and runs nothing twice",
          "[redis][faults]") {
    server_process srv;
    constexpr int n = 1000;
    redis_client r = stream_of(srv, n);
    wr::consumer_options o = options_for(srv);
    o.command_timeout = 200ms;
    o.max_in_flight = 40;
    o.batch = 20;
    watched_consumer w(o);
    REQUIRE(eventually([&] { return w.runs.total() >= n / 4; }));
    (void)r.run({"CLIENT", "PAUSE", "1500", "ALL"});
    REQUIRE(eventually([&] { return w.events.count(kind::disconnected) >= 1; }));
    REQUIRE(eventually(
        [&] { return w.runs.runs().size() == n && w.consumer.stats().in_flight == 0; }, 60s));
    REQUIRE(eventually([&] { return r.pending(stream, "g") == 0; }));
    check_exactly_once(r, w.consumer, w.runs, n);
    (void)w.consumer.stop(1s);
}

TEST_CASE("redis faults: a server with a password: AUTH on every connection, refusals are clear "
          "and never show the password",
          "[redis][faults][auth]") {
    const std::string password = "s3cret-Pa55-word";
    server_process srv({"--requirepass", password}, password);
    redis_client r = stream_of(srv, 0);
    (void)r.run({"ACL", "SETUSER", "alice", "on", ">alice-" + password, "~*", "&*", "+@all"});

    auto message_of = [](const wr::consumer_options& o) {
        try {
            wr::stream_consumer c([](wr::stream_entry&) {}, o);
        } catch (const wr::redis_error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    wr::consumer_options none = options_for(srv);
    CHECK_THAT(message_of(none),
               Catch::Contains("NOAUTH") && Catch::Contains("consumer_options.password"));
    wr::consumer_options wrong = options_for(srv);
    wrong.password = "not-" + password;
    const std::string refused = message_of(wrong);
    CHECK_THAT(refused, Catch::Contains("WRONGPASS") && Catch::Contains("cannot authenticate"));
    CHECK(refused.find(password) == std::string::npos);
    wr::producer_options po;
    po.port = srv.port();
    po.stream = stream;
    po.password = wrong.password;
    CHECK_THROWS_WITH(wr::stream_producer(po), !Catch::Contains(password));

    const bool as_user = GENERATE(false, true);
    wr::consumer_options o = options_for(srv);
    o.username = as_user ? "alice" : "";
    o.password = as_user ? "alice-" + password : password;
    watched_consumer w(o);
    po.username = o.username;
    po.password = o.password;
    wr::stream_producer producer(po);
    for (int i = 0; i < 10; ++i) {
        (void)producer.add({{"n", std::to_string(i)}});
    }
    REQUIRE(eventually([&] { return w.consumer.stats().acknowledged == 10; }));
    // A new connection must authenticate again.
    std::string id;
    REQUIRE(eventually([&] { return !(id = client_id(r, "c1")).empty(); }));
    CHECK(r.integer({"CLIENT", "KILL", "ID", id}) == 1);
    REQUIRE(eventually([&] { return w.events.count(kind::connected) == 1; }));
    for (int i = 10; i < 20; ++i) {
        (void)producer.add({{"n", std::to_string(i)}});
    }
    REQUIRE(eventually([&] { return w.consumer.stats().acknowledged == 20; }));
    CHECK(w.consumer.stats().redis_errors == 0);
    for (const std::string& d : w.events.details()) {
        CHECK(d.find(password) == std::string::npos);
    }
    check_exactly_once(r, w.consumer, w.runs, 20);
    (void)w.consumer.stop(1s);
}
