// Three consumer processes share one group; one is killed with SIGKILL mid-run. The survivors
// must claim what it left pending, so that every entry runs at least once, every entry ends
// acknowledged, the only duplicates are entries the killed process held, and the dead-letter
// stream holds exactly the entries that always fail.

#include "redis/processes.hpp"
#include "redis/redis_util.hpp"
#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using workerpool::test::eventually;
using workerpool::test::exit_status;
using workerpool::test::group_state;
using workerpool::test::read_lines;
using workerpool::test::redis_client;
using workerpool::test::spawn_consumer;

TEST_CASE("redis: a consumer killed with SIGKILL loses nothing, survivors claim its entries",
          "[redis][kill]") {
    redis_client r;
    const std::string stream = workerpool::test::unique_name("kill");
    const std::string dead_stream = stream + ":dead";
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});

    constexpr int entries = 4000;
    std::set<std::string> good;
    std::set<std::string> poison;
    std::string last_id;
    for (int i = 0; i < entries; ++i) {
        const bool bad = i % 100 == 7;
        last_id = r.xadd(stream, {{"n", std::to_string(i)}, {"poison", bad ? "1" : "0"}});
        (bad ? poison : good).insert(last_id);
    }

    char dir_template[] = "/tmp/workerpool-kill-XXXXXX";
    REQUIRE(mkdtemp(dir_template) != nullptr);
    const std::string dir = dir_template;
    const std::string port = std::to_string(workerpool::test::redis_port());
    const std::vector<std::string> names{"survivor-a", "survivor-b", "victim"};
    std::map<std::string, pid_t> pids;
    for (const std::string& name : names) {
        // 2 workers, 2 ms per entry: about 1000 entries per second per process.
        pids[name] = spawn_consumer({WORKERPOOL_REDIS_CONSUMER_PROCESS, port, stream, "g", name,
                                     dir + "/" + name, "2000", "1000"});
    }

    // Mid-run: once the victim has finished some entries and holds more.
    REQUIRE(eventually([&] { return read_lines(dir + "/victim").size() >= 100; }, 60s));
    REQUIRE(kill(pids["victim"], SIGKILL) == 0);
    const int victim_status = exit_status(pids["victim"]);
    CHECK(WIFSIGNALED(victim_status));
    // What it held when it died: delivered to it, not acknowledged. Nothing else may run twice.
    const long long held = r.pending(stream, "g", "victim");
    const std::vector<std::string> victim_done = read_lines(dir + "/victim");

    // The survivors finish the stream, the victim's pending entries included.
    REQUIRE(eventually(
        [&] {
            const auto [delivered, pending] = group_state(r, stream);
            return delivered == last_id && pending == 0;
        },
        120s));

    for (const std::string name : {"survivor-a", "survivor-b"}) {
        REQUIRE(kill(pids[name], SIGTERM) == 0);
        const int status = exit_status(pids[name]);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }

    std::map<std::string, int> runs;
    std::size_t lines = 0;
    for (const std::string& name : names) {
        for (const std::string& id : read_lines(dir + "/" + name)) {
            ++runs[id];
            ++lines;
        }
    }
    unsigned long long claimed = 0;
    for (const std::string name : {"survivor-a", "survivor-b"}) {
        std::ifstream summary(dir + "/" + name + ".summary");
        unsigned long long read = 0, claims = 0, acked = 0, dead = 0;
        REQUIRE(summary >> read >> claims >> acked >> dead);
        claimed += claims;
    }

    // Every good entry ran at least once; no poison entry ever "succeeded".
    std::size_t missing = 0;
    for (const std::string& id : good) {
        missing += runs.count(id) == 0 ? 1U : 0U;
    }
    CHECK(missing == 0);
    for (const std::string& id : poison) {
        CHECK(runs.count(id) == 0);
    }
    // Duplicates: only entries the victim finished but had not acknowledged when it died.
    const std::set<std::string> victim_set(victim_done.begin(), victim_done.end());
    std::size_t duplicates = 0;
    for (const auto& [id, n] : runs) {
        if (n > 1) {
            duplicates += static_cast<std::size_t>(n - 1);
            CHECK(n == 2);
            CHECK(victim_set.count(id) == 1);
        }
    }
    CHECK(static_cast<long long>(duplicates) <= held);
    CHECK(static_cast<long long>(claimed) >= held);
    // Everything acknowledged; every poison entry dead-lettered exactly once.
    CHECK(r.pending(stream, "g") == 0);
    std::multiset<std::string> dead_ids;
    for (const auto& d : r.range(dead_stream)) {
        dead_ids.insert(*d.find("dl:id"));
    }
    CHECK(dead_ids.size() == poison.size());
    CHECK(std::set<std::string>(dead_ids.begin(), dead_ids.end()) == poison);

    std::printf("kill test: %d entries (%zu poison), victim finished %zu before SIGKILL and "
                "held %lld; survivors claimed %llu; %zu handler runs, %zu duplicates; %zu dead "
                "letters\n",
                entries, poison.size(), victim_done.size(), held, claimed, lines, duplicates,
                dead_ids.size());
    r.del({stream, dead_stream});
}
