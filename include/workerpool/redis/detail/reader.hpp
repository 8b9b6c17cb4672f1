#pragma once

/// @file
/// Not API: reading new entries of a consumer group (XREADGROUP ... >), as a request that can be
/// pipelined behind other commands and a reply parsed into entries.

#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/connection.hpp>

#include <chrono>
#include <cstddef>
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

/// Sends XREADGROUP for new entries and parses what comes back. At most one read is outstanding
/// (sent, its reply not taken yet), so the next one can be sent before the last one is parsed.
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
        outstanding_ = c.append_views({"XREADGROUP", "GROUP", group_, consumer_, "COUNT", count_,
                                       "BLOCK", block_, "STREAMS", stream_, ">"});
        return outstanding_;
    }

    /// Whether a read was sent and its reply not taken yet.
    [[nodiscard]] bool outstanding() const noexcept { return outstanding_; }

    /// Forgets the outstanding read (its connection is gone; what it delivered is pending here,
    /// for the own-list scan after reconnecting).
    void abandon() noexcept { outstanding_ = false; }

    /// Takes the outstanding read's reply off the connection.
    read_reply take(connection& c) {
        outstanding_ = false;
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
    bool outstanding_ = false;
};

}  // namespace workerpool::redis::detail
