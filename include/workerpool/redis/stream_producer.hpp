#pragma once

/// @file
/// `stream_producer`: appends entries to a Redis stream (XADD), one at a time or as a pipelined
/// batch, optionally capping the stream's length (MAXLEN ~). Needs hiredis (`workerpool::redis`).

#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/connection.hpp>
#include <workerpool/redis/stream_entry.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace workerpool::redis {

/// The configuration of a `stream_producer`. Validated by its constructor, which throws
/// `std::invalid_argument` naming the first bad field.
struct producer_options {
    /// Server address: a host name or IP address (plain TCP; see `consumer_options::host`).
    std::string host = "127.0.0.1";
    /// Server port, 1 to 65535.
    int port = 6379;
    /// ACL user name for AUTH; empty = the default user. Needs `password`.
    std::string username;
    /// Password sent with AUTH after every connection; empty = no AUTH. It never appears in an
    /// exception's message.
    std::string password;
    /// The stream to append to. Must not be empty.
    std::string stream;
    /// When > 0, each XADD trims the stream to about this many entries (`MAXLEN ~ max_len`:
    /// Redis trims whole internal nodes, so the stream may keep somewhat more). Trimming removes
    /// the oldest entries whether or not a group has read them. 0 = no cap.
    std::size_t max_len = 0;
    /// Limit on connecting. Must be > 0.
    std::chrono::milliseconds connect_timeout{2000};
    /// Limit on each reply. Must be > 0.
    std::chrono::milliseconds command_timeout{5000};
};

/// Appends entries to one Redis stream.
///
/// The constructor connects (and authenticates); the connection is named "workerpool-producer"
/// (CLIENT LIST). A call that finds the connection broken
/// reconnects once before sending. A call that fails throws `redis_error`; whether the entry
/// was added is then unknown (the reply may have been lost), so a retry may add it twice:
/// consumers should be idempotent, as they must be anyway.
///
/// Thread safety: one thread at a time (one connection); use one producer per thread.
class stream_producer {
public:
    /// An entry's field/value pairs, in order (a field may repeat).
    using fields = std::vector<std::pair<std::string, std::string>>;

    /// Connects to `o.host`:`o.port` and authenticates.
    /// Throws: `std::invalid_argument` for bad options; `redis_error` when the server cannot be
    /// reached or refuses the credentials.
    explicit stream_producer(producer_options o) : options_((validate(o), std::move(o))) {
        if (options_.max_len > 0) {
            max_len_ = std::to_string(options_.max_len);
        }
        reconnect();
    }

    /// Appends one entry; returns its id.
    /// Throws: `std::invalid_argument` if `f` is empty; `redis_error` if the server refused it or
    /// the connection failed.
    std::string add(const fields& f) {
        require_fields(f, "stream_producer::add");
        connection().append_views(command(f));
        return take_id(connection_->reply());
    }

    /// Appends `entries` in order, pipelined (one round trip for the batch); returns their ids.
    /// Throws: `std::invalid_argument` if an entry is empty (nothing is sent then);
    /// `redis_error` if the server refused an entry or the connection failed: the message says
    /// how many were added (the others may follow the refused one).
    std::vector<std::string> add_batch(const std::vector<fields>& entries) {
        for (const fields& f : entries) {
            require_fields(f, "stream_producer::add_batch");
        }
        detail::connection& c = connection();
        for (const fields& f : entries) {
            c.append_views(command(f));
        }
        std::vector<std::string> ids;
        ids.reserve(entries.size());
        std::string first_error;
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const detail::reply_ptr r = c.reply();
            if (r == nullptr || detail::is_error(r.get())) {
                if (first_error.empty()) {
                    first_error = "entry " + std::to_string(i) + ": " + error_of(r);
                }
                if (r == nullptr) {
                    break;
                }
                continue;
            }
            ids.push_back(detail::reply_text(r.get()));
        }
        if (!first_error.empty()) {
            throw redis_error("workerpool::redis: XADD to '" + options_.stream + "' added " +
                              std::to_string(ids.size()) + " of " + std::to_string(entries.size()) +
                              " entries; " + first_error);
        }
        return ids;
    }

    /// The options in use (after validation).
    [[nodiscard]] const producer_options& options() const noexcept { return options_; }

private:
    static void validate(const producer_options& o) {
        constexpr const char* in = "producer_options.";
        detail::require(!o.host.empty(), in, "host", "must not be empty");
        detail::require(o.port > 0 && o.port <= 65535, in, "port", "must be in 1..65535");
        detail::require(o.username.empty() || !o.password.empty(), in, "username",
                        "needs producer_options.password");
        detail::require(!o.stream.empty(), in, "stream", "must not be empty");
        detail::require(o.connect_timeout.count() > 0, in, "connect_timeout", "must be > 0");
        detail::require(o.command_timeout.count() > 0, in, "command_timeout", "must be > 0");
    }

    static void require_fields(const fields& f, const char* where) {
        if (f.empty()) {
            throw std::invalid_argument(std::string("workerpool::redis: ") + where +
                                        ": an entry needs at least one field");
        }
    }

    void reconnect() {
        detail::open_result r = detail::open({options_.host, options_.port, options_.username,
                                              options_.password, options_.connect_timeout,
                                              options_.command_timeout, "workerpool-producer"});
        if (r.status != detail::reply_class::ok) {
            throw redis_error("workerpool::redis: " + r.error);
        }
        connection_ = std::move(r.conn);
    }

    // The connection, reconnected first if the last call broke it.
    detail::connection& connection() {
        if (connection_ == nullptr || !connection_->ok()) {
            reconnect();
        }
        return *connection_;
    }

    const std::vector<std::string_view>& command(const fields& f) {
        args_.assign({"XADD", options_.stream});
        if (!max_len_.empty()) {
            args_.insert(args_.end(), {"MAXLEN", "~", max_len_});
        }
        args_.emplace_back("*");
        for (const auto& [field, value] : f) {
            args_.emplace_back(field);
            args_.emplace_back(value);
        }
        return args_;
    }

    [[nodiscard]] std::string error_of(const detail::reply_ptr& r) const {
        return r == nullptr ? "connection failed: " + connection_->error()
                            : detail::reply_text(r.get());
    }

    [[nodiscard]] std::string take_id(const detail::reply_ptr& r) const {
        if (r == nullptr || detail::is_error(r.get())) {
            throw redis_error("workerpool::redis: XADD to '" + options_.stream +
                              "' failed: " + error_of(r));
        }
        return detail::reply_text(r.get());
    }

    const producer_options options_;
    std::string max_len_;  // options_.max_len as text; empty = no cap
    std::unique_ptr<detail::connection> connection_;
    std::vector<std::string_view> args_;  // scratch for one command
};

}  // namespace workerpool::redis
