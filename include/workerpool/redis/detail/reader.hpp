#pragma once

/// @file
/// Not API: reading new entries of a consumer group (XREADGROUP ... >), as a request that can be
/// pipelined behind other commands and a reply parsed into entries.

#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/connection.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace workerpool::redis::detail {

/// The reply of one read, taken off the connection but not parsed yet.
struct read_reply {
    reply_class status = reply_class::ok;  ///< `ok`, or why there are no entries.
    std::string error;                     ///< The error reply's text, if any.
    reply_ptr reply;                       ///< The reply itself (with `ok`).
    const redisReply* entries = nullptr;   ///< Its entry array; null if none (BLOCK timed out).
};

/// What one read brought, parsed.
struct read_result {
    std::vector<stream_entry> entries;  ///< New entries, in stream order.
    std::vector<std::string> gone;      ///< Ids delivered without a body (deleted meanwhile).
};

/// Sends XREADGROUP for new entries and parses what comes back. Several reads may be
/// outstanding (sent, their replies not taken yet), so the server works on the next batch while
/// the reader parses the last one; their replies are taken in order.
///
/// Thread safety: one thread (the reader).
class reader {
public:
    /// Keeps the stream, group and consumer names of `o`.
    explicit reader(const consumer_options& o)
        : group_(o.group), consumer_(o.consumer), stream_(o.stream) {}

    /// Queues a read of at most `count` new entries, waiting up to `block` for them.
    bool send(connection& c, std::size_t count, std::chrono::milliseconds block) {
        count_ = std::to_string(count);
        block_ = std::to_string(block.count());
        if (!c.append_views({"XREADGROUP", "GROUP", group_, consumer_, "COUNT", count_, "BLOCK",
                             block_, "STREAMS", stream_, ">"})) {
            return false;
        }
        requested_.push_back(count);
        asked_ += count;
        return true;
    }

    /// How many reads were sent and their replies not taken yet.
    [[nodiscard]] std::size_t outstanding() const noexcept { return requested_.size(); }

    /// How many entries the outstanding reads may bring, at most.
    [[nodiscard]] std::size_t asked() const noexcept { return asked_; }

    /// Forgets the outstanding reads (their connection is gone; what they delivered is pending
    /// here, for the own-list scan after reconnecting).
    void abandon() noexcept {
        requested_.clear();
        asked_ = 0;
    }

    /// Takes the oldest outstanding read's reply off the connection. Pre: `outstanding() > 0`.
    read_reply take(connection& c) {
        asked_ -= requested_.front();
        requested_.pop_front();
        read_reply out;
        out.reply = c.reply();
        out.status = classify(out.reply.get());
        if (out.status != reply_class::ok) {
            out.error = out.reply == nullptr ? c.error() : reply_text(out.reply.get());
            return out;
        }
        // [[stream, [entry, ...]]], or nil when BLOCK timed out.
        const redisReply* r = out.reply.get();
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
            at(r, 0)->type == REDIS_REPLY_ARRAY && at(r, 0)->elements == 2 &&
            at(at(r, 0), 1)->type == REDIS_REPLY_ARRAY) {
            out.entries = at(at(r, 0), 1);
        }
        return out;
    }

    /// How many entries `r` holds.
    static std::size_t count(const read_reply& r) noexcept {
        return r.entries == nullptr ? 0 : r.entries->elements;
    }

    /// Parses the entries of `r` into `out` (cleared first; its capacity is kept), taking the
    /// entry objects from `spares` while it has some (their strings keep their memory).
    static void parse(const read_reply& r, read_result& out, std::vector<stream_entry>& spares) {
        out.entries.clear();
        out.gone.clear();
        if (r.entries == nullptr) {
            return;
        }
        for (std::size_t i = 0; i < r.entries->elements; ++i) {
            if (spares.empty()) {
                out.entries.emplace_back();
            } else {
                out.entries.push_back(std::move(spares.back()));
                spares.pop_back();
            }
            if (!parse_entry_into(at(r.entries, i), out.entries.back())) {
                spares.push_back(std::move(out.entries.back()));
                out.entries.pop_back();
                out.gone.push_back(entry_id(at(r.entries, i)));
            }
        }
    }

private:
    const std::string group_;
    const std::string consumer_;
    const std::string stream_;
    std::string count_;  // scratch: the command's numbers
    std::string block_;
    std::deque<std::size_t> requested_;  // COUNT of each outstanding read, oldest first
    std::size_t asked_ = 0;              // their sum
};

}  // namespace workerpool::redis::detail
