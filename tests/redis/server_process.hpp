#pragma once

// A redis-server of a test's own, for the fault tests: a child process (not a daemon) on
// 127.0.0.1 and a free port, its files in a scratch directory. The test may stop it (SHUTDOWN,
// SIGTERM, SIGKILL) and start it again on the same port and directory, pause it or make it busy,
// without touching the shared server that the other Redis tests use.

#include "redis/redis_util.hpp"
#include "support/test_util.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace workerpool::test {

/// One redis-server child process. Not thread-safe; the owning test thread drives it.
class server_process {
public:
    /// Starts a server with `args` added to the defaults (no snapshots, no AOF, a log file), on a
    /// free port. `password`: what a `client()` sends with AUTH (the server's --requirepass).
    explicit server_process(std::vector<std::string> args = {}, std::string password = {})
        : args_(std::move(args)), password_(std::move(password)) {
        char dir_template[] = "/tmp/workerpool-redis-XXXXXX";
        if (mkdtemp(dir_template) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        dir_ = dir_template;
        std::mt19937 rng(
            static_cast<unsigned>(::getpid()) ^
            static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
        for (int attempt = 0; attempt < 20; ++attempt) {
            port_ = std::uniform_int_distribution<int>(20000, 50000)(rng);
            if (start()) {
                return;
            }
        }
        throw std::runtime_error("could not start redis-server; see " + dir_ + "/redis.log");
    }

    server_process(const server_process&) = delete;
    server_process& operator=(const server_process&) = delete;

    ~server_process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            (void)wait_exit();
        }
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }

    /// The port it listens on (the same after a restart).
    [[nodiscard]] int port() const noexcept { return port_; }

    /// Its scratch directory (dump.rdb, appendonlydir, redis.log).
    [[nodiscard]] const std::string& dir() const noexcept { return dir_; }

    /// A client for set-up and checks (authenticated when the server has a password).
    [[nodiscard]] redis_client client() const {
        redis_client c(port_);
        if (!password_.empty()) {
            (void)c.run({"AUTH", password_});
        }
        return c;
    }

    /// Starts it again on the same port and directory, with `extra` arguments for this start
    /// only (e.g. a loading delay). Throws if it does not come up.
    void restart(const std::vector<std::string>& extra = {}) {
        if (!start(extra)) {
            throw std::runtime_error("redis-server did not restart on port " +
                                     std::to_string(port_) + "; see " + dir_ + "/redis.log");
        }
    }

    /// Sends SHUTDOWN with `how` ("NOSAVE", "SAVE", or "" for the configured default) and waits
    /// for the process to exit.
    void shutdown(const std::string& how = "") {
        {
            redis_client c = client();
            std::vector<std::string> cmd{"SHUTDOWN"};
            if (!how.empty()) {
                cmd.push_back(how);
            }
            try {
                (void)c.run(cmd);  // no reply when it works: the connection closes
            } catch (const std::runtime_error&) {
            }
        }
        (void)wait_exit();
    }

    /// Sends `sig` (SIGTERM: a graceful stop; SIGKILL: a crash) and waits for the exit.
    void signal(int sig) {
        ::kill(pid_, sig);
        (void)wait_exit();
    }

private:
    bool start(const std::vector<std::string>& extra = {}) {
        std::vector<std::string> argv{WORKERPOOL_REDIS_SERVER_BIN,
                                      "--port",
                                      std::to_string(port_),
                                      "--bind",
                                      "127.0.0.1",
                                      "--dir",
                                      dir_,
                                      "--logfile",
                                      "redis.log",
                                      "--save",
                                      "",
                                      "--appendonly",
                                      "no"};
        argv.insert(argv.end(), args_.begin(), args_.end());
        argv.insert(argv.end(), extra.begin(), extra.end());
        std::vector<char*> raw;
        for (std::string& a : argv) {
            raw.push_back(a.data());
        }
        raw.push_back(nullptr);
        if (posix_spawn(&pid_, raw[0], nullptr, nullptr, raw.data(), environ) != 0) {
            pid_ = -1;
            return false;
        }
        // Up when it answers (PONG, or NOAUTH / LOADING: it listens), down if it exited (the
        // port was taken).
        const bool up = eventually(
            [&] {
                int status = 0;
                if (waitpid(pid_, &status, WNOHANG) == pid_) {
                    pid_ = -1;
                    return true;
                }
                redis::detail::connection c("127.0.0.1", port_, std::chrono::milliseconds(200),
                                            std::chrono::milliseconds(500));
                return c.ok() && c.command({"PING"}) != nullptr && answers_as_ours(c);
            },
            std::chrono::seconds(20));
        return up && pid_ > 0;
    }

    // Whether the server on the port is the process we started: another test's server may hold
    // the port (ours then exits), and its PONG must not pass for ours.
    bool answers_as_ours(redis::detail::connection& c) const {
        if (!password_.empty()) {
            (void)c.command({"AUTH", password_});
        }
        const redis::detail::reply_ptr info = c.command({"INFO", "server"});
        if (!info || info->type != REDIS_REPLY_STRING) {
            return false;
        }
        const std::string text(info->str, info->len);
        return text.find("process_id:" + std::to_string(pid_) + "\r\n") != std::string::npos;
    }

    int wait_exit() {
        int status = 0;
        if (pid_ > 0) {
            (void)waitpid(pid_, &status, 0);
            pid_ = -1;
        }
        return status;
    }

    std::vector<std::string> args_;
    std::string password_;
    std::string dir_;
    int port_ = 0;
    pid_t pid_ = -1;
};

/// A TCP listener on 127.0.0.1:`port` that accepts every connection and closes it at once,
/// counting them: stands where a server was, so that a client's reconnection attempts fail (and
/// can be counted) without waiting for timeouts.
class refusing_listener {
public:
    /// Listens on `port` (which must be free: stop the server first).
    explicit refusing_listener(int port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        const int yes = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0) {
            ::close(fd_);
            throw std::runtime_error("refusing_listener: cannot listen on " + std::to_string(port));
        }
        thread_ = std::jthread([this](std::stop_token st) {
            while (!st.stop_requested()) {
                const int c = ::accept(fd_, nullptr, nullptr);
                if (c < 0) {
                    return;  // closed by the destructor
                }
                accepted_.fetch_add(1, std::memory_order_relaxed);  // a count tests poll
                ::close(c);
            }
        });
    }

    refusing_listener(const refusing_listener&) = delete;
    refusing_listener& operator=(const refusing_listener&) = delete;

    /// Stops listening (the port is free again when this returns).
    ~refusing_listener() {
        thread_.request_stop();
        ::shutdown(fd_, SHUT_RDWR);  // wakes the accept
        thread_.join();
        ::close(fd_);
    }

    /// Connections accepted (and closed) so far.
    [[nodiscard]] int accepted() const noexcept {
        return accepted_.load(std::memory_order_relaxed);
    }

private:
    int fd_ = -1;
    std::atomic<int> accepted_{0};
    std::jthread thread_;
};

}  // namespace workerpool::test
