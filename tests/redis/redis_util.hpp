#pragma once

// Helpers for the Redis tests: where the test server is, a small synchronous client built on the
// consumer's own connection class, and names that no other test (or earlier run) uses.

#include <workerpool/redis/stream_consumer.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace workerpool::test {

/// The test server's port: $WORKERPOOL_REDIS_PORT, else the number in the file named by
/// $WORKERPOOL_REDIS_PORT_FILE (written by scripts/redis-local.sh, which ctest runs first).
inline int redis_port() {
    if (const char* p = std::getenv("WORKERPOOL_REDIS_PORT")) {
        return std::stoi(p);
    }
    if (const char* f = std::getenv("WORKERPOOL_REDIS_PORT_FILE")) {
        std::ifstream in(f);
        int port = 0;
        if (in >> port) {
            return port;
        }
    }
    throw std::runtime_error("no test redis-server: set WORKERPOOL_REDIS_PORT, or run the tests "
                             "through ctest (which starts one)");
}

/// Options for a test consumer of group "g" that creates it: short reads (`block` 20 ms), quick
/// retries and reconnections, two workers, no claiming (tests that claim set `claim_idle`).
inline redis::consumer_options consumer_options_for(int port, const std::string& stream,
                                                    const std::string& consumer = "c1") {
    redis::consumer_options o;
    o.port = port;
    o.stream = stream;
    o.group = "g";
    o.consumer = consumer;
    o.create_group = true;
    o.block = std::chrono::milliseconds(20);
    o.claim_idle = std::chrono::milliseconds(0);
    o.reconnect_min = std::chrono::milliseconds(10);
    o.reconnect_max = std::chrono::milliseconds(100);
    o.pool.max_workers = 2;
    o.pool.retry.initial_backoff = std::chrono::milliseconds(1);
    o.pool.retry.max_backoff = std::chrono::milliseconds(2);
    return o;
}

/// A name unique to this process and call, so runs and tests never share a stream.
inline std::string unique_name(const std::string& what) {
    static int counter = 0;
    return "workerpool-test:" + what + ":" + std::to_string(::getpid()) + ":" +
           std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" +
           std::to_string(++counter);
}

/// A blocking client for test set-up and checks. Throws on a broken connection.
class redis_client {
public:
    explicit redis_client(int port = redis_port())
        : connection_("127.0.0.1", port, std::chrono::seconds(2), std::chrono::seconds(10)) {
        if (!connection_.ok()) {
            throw std::runtime_error("cannot connect to the test redis-server: " +
                                     connection_.error());
        }
    }

    /// Runs a command; throws if the connection broke (an error reply is returned, not thrown).
    redis::detail::reply_ptr run(const std::vector<std::string>& args) {
        redis::detail::reply_ptr r = connection_.command(args);
        if (r == nullptr) {
            throw std::runtime_error("test redis connection broke: " + connection_.error());
        }
        return r;
    }

    /// Runs a command whose reply is an integer.
    long long integer(const std::vector<std::string>& args) {
        redis::detail::reply_ptr r = run(args);
        if (r->type != REDIS_REPLY_INTEGER) {
            throw std::runtime_error("expected an integer reply to " + args.front() +
                                     ", got: " + redis::detail::reply_text(r.get()));
        }
        return r->integer;
    }

    /// Appends an entry with the given field/value pairs; returns its id.
    std::string xadd(const std::string& stream,
                     std::initializer_list<std::pair<std::string, std::string>> fields) {
        std::vector<std::string> cmd{"XADD", stream, "*"};
        for (const auto& [f, v] : fields) {
            cmd.push_back(f);
            cmd.push_back(v);
        }
        redis::detail::reply_ptr r = run(cmd);
        return redis::detail::reply_text(r.get());
    }

    /// Entries pending in `group` (all consumers, or one).
    long long pending(const std::string& stream, const std::string& group,
                      const std::string& consumer = {}) {
        std::vector<std::string> cmd{"XPENDING", stream, group, "-", "+", "1000000"};
        if (!consumer.empty()) {
            cmd.push_back(consumer);
        }
        redis::detail::reply_ptr r = run(cmd);
        return r->type == REDIS_REPLY_ARRAY ? static_cast<long long>(r->elements) : -1;
    }

    /// Every entry of a stream.
    std::vector<redis::stream_entry> range(const std::string& stream) {
        redis::detail::reply_ptr r = run({"XRANGE", stream, "-", "+"});
        std::vector<redis::stream_entry> out;
        for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
            if (auto e = redis::detail::parse_entry(r->element[i])) {
                out.push_back(std::move(*e));
            }
        }
        return out;
    }

    /// Deletes the keys (test clean-up).
    void del(std::initializer_list<std::string> keys) {
        std::vector<std::string> cmd{"DEL"};
        cmd.insert(cmd.end(), keys.begin(), keys.end());
        (void)run(cmd);
    }

private:
    redis::detail::connection connection_;
};

}  // namespace workerpool::test
