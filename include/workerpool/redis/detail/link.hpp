#pragma once

/// @file
/// Not API: a consumer's connection and its outages, as a small state machine (up ⇄ down) with
/// an exponential reconnection backoff. It reports transitions as return values; its owner turns
/// them into events.

#include <workerpool/redis/detail/connection.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace workerpool::redis::detail {

/// The reader's connection: up (usable) or down (an outage, between a failure and the next
/// successful reconnection). An outage starts once, however many reconnection attempts fail.
///
/// Thread safety: one thread (the reader, then `stop` after the reader is joined).
class link {
public:
    /// Remembers where to connect and how fast to retry; connects only in `connect`.
    link(endpoint e, std::chrono::milliseconds backoff_min, std::chrono::milliseconds backoff_max)
        : endpoint_(std::move(e)), backoff_min_(backoff_min), backoff_max_(backoff_max),
          backoff_(backoff_min) {}

    /// Connects (with AUTH and the client name); on failure the link is down and the result
    /// says why. Used for the first connection and for each reconnection.
    open_result connect() {
        open_result r = open(endpoint_);
        if (r.status == reply_class::ok) {
            conn_ = std::move(r.conn);
            backoff_ = backoff_min_;
            if (down_) {
                down_ = false;
                ++reconnects_;
            }
        } else {
            conn_.reset();
            down_ = true;
            backoff_ = std::min(backoff_ * 2, backoff_max_);
        }
        return r;
    }

    /// Whether the connection is usable.
    [[nodiscard]] bool up() const noexcept { return conn_ != nullptr && conn_->ok(); }

    /// The connection. Pre: `up()`.
    [[nodiscard]] connection& get() noexcept { return *conn_; }

    /// Ends the connection after a broken one or a "not now" reply, keeping `why` as the
    /// outage's reason. Returns true if this starts an outage (the first failure since the link
    /// was last up), false if the link was already down.
    bool fail(std::string why) {
        if (conn_ != nullptr && why.empty()) {
            why = conn_->error();
        }
        conn_.reset();
        if (down_) {
            return false;
        }
        down_ = true;
        why_ = std::move(why);
        return true;
    }

    /// Marks the link down if its connection broke while nobody was looking (e.g. a timeout in
    /// a command whose caller only checked for null); returns true if that starts an outage.
    bool notice_broken() {
        if (conn_ != nullptr && !conn_->ok()) {
            return fail(conn_->error());
        }
        return false;
    }

    /// Why the current outage started.
    [[nodiscard]] const std::string& why() const noexcept { return why_; }

    /// How long to wait before the next reconnection attempt.
    [[nodiscard]] std::chrono::milliseconds backoff() const noexcept { return backoff_; }

    /// Reconnections that succeeded after an outage.
    [[nodiscard]] std::uint64_t reconnects() const noexcept { return reconnects_; }

private:
    const endpoint endpoint_;
    const std::chrono::milliseconds backoff_min_;
    const std::chrono::milliseconds backoff_max_;
    std::chrono::milliseconds backoff_;
    std::unique_ptr<connection> conn_;
    bool down_ = false;  // in an outage: failed, not reconnected yet
    std::string why_;
    std::uint64_t reconnects_ = 0;
};

}  // namespace workerpool::redis::detail
