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

/// What one read brought.
struct read_result {
    reply_class status = reply_class::ok;  ///< `ok`, or why there are no entries.
    std::string error;                     ///< The error reply's text, if any.
    std::vector<stream_entry> entries;     ///< New entries, in stream order.
    std::vector<std::string> gone;         ///< Ids delivered without a body (deleted meanwhile).
};

/// Sends XREADGROUP for new entries and parses what comes back. Owns only the command's
/// constant words.
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
        return c.append_views({"XREADGROUP", "GROUP", group_, consumer_, "COUNT", count_, "BLOCK",
                               block_, "STREAMS", stream_, ">"});
    }

    /// Reads the reply of the queued read.
    read_result receive(connection& c) const {
        read_result out;
        const reply_ptr r = c.reply();
        out.status = classify(r.get());
        if (out.status != reply_class::ok) {
            out.error = r == nullptr ? c.error() : reply_text(r.get());
            return out;
        }
        // [[stream, [entry, ...]]], or nil when BLOCK timed out.
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
            r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2) {
            return out;
        }
        const redisReply* entries = r->element[0]->element[1];
        if (entries->type != REDIS_REPLY_ARRAY) {
            return out;
        }
        out.entries.reserve(entries->elements);
        for (std::size_t i = 0; i < entries->elements; ++i) {
            std::optional<stream_entry> e = parse_entry(entries->element[i]);
            if (e) {
                out.entries.push_back(std::move(*e));
            } else {
                out.gone.push_back(entry_id(entries->element[i]));
            }
        }
        return out;
    }

private:
    const std::string group_;
    const std::string consumer_;
    const std::string stream_;
    std::string count_;  // scratch: the command's numbers, alive until sent
    std::string block_;
};

}  // namespace workerpool::redis::detail
