#pragma once

/// @file
/// Not API: a consumer's set-up check: the stream and its group exist (or are created), with
/// errors that say what to change.

#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/connection.hpp>
#include <workerpool/redis/stream_entry.hpp>

#include <cstddef>
#include <string>

namespace workerpool::redis::detail {

/// A hint to append to a server error that asks for a password; empty otherwise.
inline std::string auth_hint(const std::string& error) {
    return error.find("NOAUTH") != std::string::npos ? " (set consumer_options.password)"
                                                     : std::string();
}

/// Creates the group (and stream) of `o` if `o.create_group`, else checks that it exists.
/// Throws: `redis_error` naming the stream, the group and the server's reply.
inline void ensure_group(connection& c, const consumer_options& o) {
    if (o.create_group) {
        const reply_ptr r =
            c.command({"XGROUP", "CREATE", o.stream, o.group, o.group_start, "MKSTREAM"});
        if (r == nullptr) {
            throw redis_error("workerpool::redis: XGROUP CREATE failed: " + c.error());
        }
        const std::string text = reply_text(r.get());
        if (is_error(r.get()) && text.rfind("BUSYGROUP", 0) != 0) {
            throw redis_error("workerpool::redis: cannot create group '" + o.group +
                              "' on stream '" + o.stream + "': " + text + auth_hint(text));
        }
        return;
    }
    const reply_ptr r = c.command({"XINFO", "GROUPS", o.stream});
    if (r == nullptr) {
        throw redis_error("workerpool::redis: XINFO GROUPS failed: " + c.error());
    }
    if (is_error(r.get())) {
        const std::string text = reply_text(r.get());
        const std::string hint = auth_hint(text);
        throw redis_error(
            "workerpool::redis: stream '" + o.stream + "' cannot be read: " + text +
            (hint.empty() ? " (set consumer_options.create_group to create it)" : hint));
    }
    for (std::size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; ++g) {
        const redisReply* info = at(r, g);
        for (std::size_t i = 0; info->type == REDIS_REPLY_ARRAY && i + 1 < info->elements; i += 2) {
            if (reply_text(at(info, i)) == "name" && reply_text(at(info, i + 1)) == o.group) {
                return;
            }
        }
    }
    throw redis_error("workerpool::redis: stream '" + o.stream + "' has no group '" + o.group +
                      "' (set consumer_options.create_group to create it)");
}

}  // namespace workerpool::redis::detail
