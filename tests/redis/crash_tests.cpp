// Entries that kill their consumer process, and consumers killed with SIGKILL, with
// max_deliveries = 3: restarted under the same name, under new names, and both at once. Audited
// from Redis (XPENDING, XINFO GROUPS, the dead-letter stream) and from each process's record of
// what it ran.

#include "redis/audit.hpp"
#include "redis/processes.hpp"
#include "redis/redis_util.hpp"
#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using workerpool::test::eventually;
using workerpool::test::fleet;
using workerpool::test::group_state;
using workerpool::test::redis_client;

namespace {

constexpr unsigned max_deliveries = 3;

struct scratch_dir {
    std::string path;
    scratch_dir() {
        char t[] = "/tmp/workerpool-crash-XXXXXX";
        REQUIRE(mkdtemp(t) != nullptr);
        path = t;
    }
};

// The dl:reason of `id`'s dead letter; empty if it has none.
std::string reason_of(const workerpool::test::audit_report& a, const std::string& id) {
    const auto it = a.dead_reasons.find(id);
    return it == a.dead_reasons.end() ? std::string() : it->second;
}

// Whether the group delivered every entry up to `last` and has none pending.
bool all_done(redis_client& r, const std::string& stream, const std::string& last) {
    const auto [delivered, pending] = group_state(r, stream);
    return delivered == last && pending == 0;
}

// Restarts consumers one at a time (named by `name_of(n)` for the n-th) whenever the last one
// died, until the group is done; stops the last one cleanly. Returns how many were started.
std::size_t run_one_at_a_time(fleet& f, redis_client& r, const std::string& stream,
                              const std::string& last, std::size_t most,
                              const std::function<std::string(std::size_t)>& name_of) {
    std::size_t current = f.spawn(name_of(0));
    while (!all_done(r, stream, last)) {
        REQUIRE(eventually([&] { return !f.alive(current) || all_done(r, stream, last); }, 60s));
        if (!f.alive(current) && !all_done(r, stream, last)) {
            REQUIRE(f.members().size() < most);  // the poison entry must stop the crash loop
            current = f.spawn(name_of(f.members().size()));
        }
    }
    (void)f.stop_all();
    return f.members().size();
}

// One aborting entry among good ones, all in one read batch.
struct poison_batch {
    std::string poison;
    std::set<std::string> good;
    std::string last;
};

poison_batch add_poison_batch(redis_client& r, const std::string& stream) {
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    poison_batch b;
    for (int i = 0; i < 10; ++i) {
        b.last = r.xadd(stream, {{"n", std::to_string(i)}, {"abort", i == 3 ? "1" : "0"}});
        if (i == 3) {
            b.poison = b.last;
        } else {
            b.good.insert(b.last);
        }
    }
    return b;
}

// The poison entry ran at most max_deliveries times and was dead-lettered once as such; every
// good entry ran and none was dead-lettered; only processes that died ran an entry twice.
void check_poison_outcome(redis_client& r, const std::string& stream, const fleet& f,
                          const poison_batch& b) {
    const std::map<std::string, int> aborts = f.aborting_runs();
    REQUIRE(aborts.count(b.poison) == 1);
    CHECK(aborts.at(b.poison) <= static_cast<int>(max_deliveries));
    const std::map<std::string, int> finished = f.finished();
    const auto a = workerpool::test::audit(r, stream, "g", stream + ":dead", finished);
    CHECK(a.pending == 0);
    CHECK(a.dead == 1);
    CHECK(a.dead_twice == 0);
    CHECK(a.dead_reasons == std::map<std::string, std::string>{{b.poison, "too_many_deliveries"}});
    for (const std::string& id : b.good) {
        CHECK(finished.count(id) == 1);
    }
    const std::set<std::string> by_dead = f.finished_by_dead();
    for (const auto& [id, n] : finished) {
        if (n > 1) {
            CHECK(by_dead.count(id) == 1);
        }
    }
    std::printf("poison batch: %zu processes, poison ran %d times, %zu runs of good entries\n",
                f.members().size(), aborts.at(b.poison), a.duplicates + finished.size());
}

// A poison batch consumed by processes one at a time, each restarted as `name_of(n)` when the
// last one died; then the outcome is checked.
void crash_loop(const std::string& what, int claim_idle_ms,
                const std::function<std::string(std::size_t)>& name_of) {
    redis_client r;
    const std::string stream = workerpool::test::unique_name(what);
    const poison_batch b = add_poison_batch(r, stream);
    const scratch_dir dir;
    fleet f(workerpool::test::redis_port(), stream, dir.path, 2000, claim_idle_ms, max_deliveries);
    (void)run_one_at_a_time(f, r, stream, b.last, 8, name_of);
    check_poison_outcome(r, stream, f, b);
    r.del({stream, stream + ":dead"});
}

// Handler runs finished so far, over every process.
std::size_t total_runs(const fleet& f) {
    std::size_t n = 0;
    for (const auto& [id, runs] : f.finished()) {
        n += static_cast<std::size_t>(runs);
    }
    return n;
}

}  // namespace

TEST_CASE("redis: an entry that kills its consumer is dead-lettered after max_deliveries runs "
          "when the consumer restarts under the same name",
          "[redis][kill]") {
    // claim_idle 0: only the own pending list brings the entry back.
    crash_loop("crash-same", 0, [](std::size_t) { return "same"; });
}

TEST_CASE("redis: an entry that kills its consumer is dead-lettered after max_deliveries runs, and "
          "the good entries of its batch run, when each restart takes a new name",
          "[redis][kill]") {
    crash_loop("crash-new", 200, [](std::size_t n) { return "new-" + std::to_string(n); });
}

TEST_CASE("redis: consumers SIGKILLed again and again, restarted under the same and new names, "
          "with entries that fail or kill: nothing lost, each dead letter once",
          "[redis][kill]") {
    redis_client r;
    const std::string stream = workerpool::test::unique_name("chaos");
    r.run({"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"});
    const int entries = workerpool::test::under_tsan ? 1500 : 3000;
    std::set<std::string> good;
    std::set<std::string> failing;  // permanent_error: dead-lettered with reason "error"
    std::set<std::string> killing;  // abort the process: dead-lettered as too_many_deliveries
    std::string last;
    for (int i = 0; i < entries; ++i) {
        const bool fails = i % 100 == 7;
        const bool kills = i % 500 == 250;
        last = r.xadd(stream, {{"n", std::to_string(i)},
                               {"poison", fails ? "1" : "0"},
                               {"abort", kills ? "1" : "0"}});
        (fails ? failing : kills ? killing : good).insert(last);
    }
    const scratch_dir dir;
    fleet f(workerpool::test::redis_port(), stream, dir.path, 1000, 1000, max_deliveries);
    constexpr std::size_t slots = 3;
    std::vector<std::size_t> slot(slots);
    std::vector<int> restarts(slots, 0);
    auto restart = [&](std::size_t s) {
        // Even restarts keep the slot's name (it re-reads its own pending list first), odd ones
        // take a new name (its pending entries wait for another consumer to claim them).
        const int n = ++restarts[s];
        const std::string name =
            "slot" + std::to_string(s) + (n % 2 == 0 ? std::string() : "-" + std::to_string(n));
        slot[s] = f.spawn(name);
    };
    for (std::size_t s = 0; s < slots; ++s) {
        slot[s] = f.spawn("slot" + std::to_string(s));
    }
    auto tend = [&] {  // restarts slots whose process died (an aborting entry)
        for (std::size_t s = 0; s < slots; ++s) {
            if (!f.alive(slot[s])) {
                restart(s);
            }
        }
    };
    // Kill a consumer every few hundred finished entries (about every 0.5-2 s here).
    const std::size_t kills = 6;
    for (std::size_t k = 0; k < kills && !all_done(r, stream, last); ++k) {
        const std::size_t seen = total_runs(f);
        REQUIRE(eventually(
            [&] {
                tend();
                return total_runs(f) >= seen + static_cast<std::size_t>(entries) / 10 ||
                       all_done(r, stream, last);
            },
            60s));
        f.kill(slot[k % slots]);
        restart(k % slots);
    }
    REQUIRE(eventually(
        [&] {
            tend();
            return all_done(r, stream, last);
        },
        120s));
    (void)f.stop_all();

    const std::map<std::string, int> finished = f.finished();
    const auto a = workerpool::test::audit(r, stream, "g", stream + ":dead", finished);
    CHECK(a.lost.empty());
    CHECK(a.pending == 0);
    CHECK(a.dead_twice == 0);
    // A good entry runs to the end, unless a SIGKILL of this test struck its process while it
    // ran alone on its last allowed delivery: that death counts as its delivery, and it is
    // dead-lettered (docs/guarantees.md, "Not guaranteed"). At most one entry per SIGKILL.
    std::size_t good_dead = 0;
    for (const std::string& id : good) {
        if (finished.count(id) == 0) {
            ++good_dead;
            CHECK(reason_of(a, id) == "too_many_deliveries");
        }
    }
    CHECK(good_dead <= kills);
    // A failing entry never finishes and is dead-lettered once: as an error, or (same as above)
    // as delivered too often if SIGKILLs kept striking it first.
    for (const std::string& id : failing) {
        CHECK(finished.count(id) == 0);
        const std::string reason = reason_of(a, id);
        CHECK((reason == "error" || reason == "too_many_deliveries"));
    }
    const std::map<std::string, int> aborts = f.aborting_runs();
    for (const std::string& id : killing) {
        CHECK(reason_of(a, id) == "too_many_deliveries");
        CHECK(aborts.count(id) == 1);
        CHECK(aborts.at(id) <= static_cast<int>(max_deliveries));
    }
    const std::set<std::string> by_dead = f.finished_by_dead();
    std::size_t duplicated = 0;
    for (const auto& [id, n] : finished) {
        if (n > 1) {
            ++duplicated;
            CHECK(by_dead.count(id) == 1);  // no duplicate on a consumer that was never killed
        }
    }
    std::printf("chaos: %d entries (%zu failing, %zu killing), %zu processes, %zu SIGKILLs, "
                "%zu entries run twice or more, %zu dead letters (%zu good ones)\n",
                entries, failing.size(), killing.size(), f.members().size(), kills, duplicated,
                a.dead, good_dead);
    r.del({stream, stream + ":dead"});
}
