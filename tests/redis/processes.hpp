#pragma once

// Consumer processes for the kill and crash tests (redis_consumer_process, consumer_process.cpp):
// spawning, killing, and reading back what each one ran. Helpers run on the test thread only.

#include "redis/redis_util.hpp"
#include "support/catch.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace workerpool::test {

/// Starts a process with `args` (args[0] is the program).
inline pid_t spawn_consumer(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& a : args) {
        argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    REQUIRE(rc == 0);
    return pid;
}

/// The non-empty lines of a file (none if it does not exist).
inline std::vector<std::string> read_lines(const std::string& path) {
    std::vector<std::string> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty()) {
            lines.push_back(line);
        }
    }
    return lines;
}

/// Waits for `pid` and returns its wait status.
inline int exit_status(pid_t pid) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return status;
}

/// The group's delivered-up-to id and pending count, from XINFO GROUPS.
inline std::pair<std::string, long long> group_state(redis_client& r, const std::string& stream) {
    auto reply = r.run({"XINFO", "GROUPS", stream});
    REQUIRE(reply->type == REDIS_REPLY_ARRAY);
    REQUIRE(reply->elements == 1);
    const redisReply* g = reply->element[0];
    std::string last;
    long long pending = -1;
    for (std::size_t i = 0; i + 1 < g->elements; i += 2) {
        const std::string key = redis::detail::reply_text(g->element[i]);
        if (key == "last-delivered-id") {
            last = redis::detail::reply_text(g->element[i + 1]);
        } else if (key == "pending") {
            pending = g->element[i + 1]->integer;
        }
    }
    return {last, pending};
}

/// Consumer processes of one group ("g") of one stream, each writing what it ran to a file of its
/// own (even when several share a consumer name one after the other).
class fleet {
public:
    /// One process: its consumer name, its output file, and whether it died (killed, or aborted
    /// by an entry) rather than stopping cleanly.
    struct member {
        std::string name;
        std::string out;
        pid_t pid = -1;
        bool died = false;
    };

    /// Remembers how to start consumers; starts none.
    fleet(int port, std::string stream, std::string dir, int work_us, int claim_idle_ms,
          unsigned max_deliveries)
        : port_(std::to_string(port)), stream_(std::move(stream)), dir_(std::move(dir)),
          work_us_(std::to_string(work_us)), claim_idle_ms_(std::to_string(claim_idle_ms)),
          max_deliveries_(std::to_string(max_deliveries)) {}

    fleet(const fleet&) = delete;
    fleet& operator=(const fleet&) = delete;

    /// Kills whatever still runs (a failed REQUIRE must not leave processes behind).
    ~fleet() {
        for (member& m : members_) {
            if (m.pid > 0) {
                ::kill(m.pid, SIGKILL);
                (void)waitpid(m.pid, nullptr, 0);
            }
        }
    }

    /// Starts a consumer called `name`; returns its index.
    std::size_t spawn(const std::string& name) {
        member m;
        m.name = name;
        m.out = dir_ + "/" + name + "." + std::to_string(members_.size());
        m.pid = spawn_consumer({WORKERPOOL_REDIS_CONSUMER_PROCESS, port_, stream_, "g", name, m.out,
                                work_us_, claim_idle_ms_, max_deliveries_});
        members_.push_back(m);
        return members_.size() - 1;
    }

    /// Whether member `i` still runs (reaps it, and marks it dead, if it exited).
    bool alive(std::size_t i) {
        member& m = members_[i];
        if (m.pid <= 0) {
            return false;
        }
        int status = 0;
        if (waitpid(m.pid, &status, WNOHANG) == m.pid) {
            m.pid = -1;
            m.died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            return false;
        }
        return true;
    }

    /// Kills member `i` with SIGKILL (a crash) and reaps it.
    void kill(std::size_t i) {
        member& m = members_[i];
        if (m.pid > 0) {
            ::kill(m.pid, SIGKILL);
            (void)exit_status(m.pid);
            m.pid = -1;
            m.died = true;
        }
    }

    /// Stops every live member with SIGTERM (a clean stop); returns how many exited with 0.
    std::size_t stop_all() {
        std::size_t clean = 0;
        for (member& m : members_) {
            if (m.pid > 0) {
                ::kill(m.pid, SIGTERM);
                const int status = exit_status(m.pid);
                m.pid = -1;
                m.died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                clean += m.died ? 0U : 1U;
            }
        }
        return clean;
    }

    /// Every process started so far.
    [[nodiscard]] const std::vector<member>& members() const noexcept { return members_; }

    /// Handler runs that finished, per entry id, over every process.
    [[nodiscard]] std::map<std::string, int> finished() const { return count_lines(""); }

    /// Runs of entries that abort their process, per entry id, over every process.
    [[nodiscard]] std::map<std::string, int> aborting_runs() const {
        return count_lines(".starts");
    }

    /// Ids that a process which died had finished (a duplicate is allowed only for these).
    [[nodiscard]] std::set<std::string> finished_by_dead() const {
        std::set<std::string> ids;
        for (const member& m : members_) {
            if (m.died) {
                for (const std::string& id : read_lines(m.out)) {
                    ids.insert(id);
                }
            }
        }
        return ids;
    }

private:
    [[nodiscard]] std::map<std::string, int> count_lines(const std::string& suffix) const {
        std::map<std::string, int> runs;
        for (const member& m : members_) {
            for (const std::string& id : read_lines(m.out + suffix)) {
                ++runs[id];
            }
        }
        return runs;
    }

    const std::string port_;
    const std::string stream_;
    const std::string dir_;
    const std::string work_us_;
    const std::string claim_idle_ms_;
    const std::string max_deliveries_;
    std::vector<member> members_;
};

}  // namespace workerpool::test
