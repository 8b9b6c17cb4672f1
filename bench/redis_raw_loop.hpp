#pragma once

// The ceiling for bench_redis: the plainest consumer-group loop hiredis allows, with nothing of
// workerpool in it. One connection, one thread: XREADGROUP COUNT <batch>, "run" each entry where
// it lies in the reply (a no-op that reads its fields), then XACK the batch pipelined with the
// next XREADGROUP, so that each batch costs one round trip. No pool, no parsing into strings, no
// bookkeeping: what stream_consumer adds on top of this is its overhead.

#include <hiredis/hiredis.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace workerpool::bench {

/// Reads entries of `stream` as consumer `consumer` of `group` and acknowledges them until
/// `done` (shared by every loop of the group, relaxed: a count, no ordering) reaches `expected`;
/// returns how many this loop acknowledged. Exits the process on a connection error (a benchmark
/// has no better answer).
inline std::uint64_t raw_consume(redisContext* c, const std::string& stream,
                                 const std::string& group, const std::string& consumer,
                                 std::size_t batch, std::uint64_t expected,
                                 std::atomic<std::uint64_t>& done) {
    const std::string count = std::to_string(batch);
    const char* read_argv[] = {"XREADGROUP",     "GROUP",        group.c_str(),
                               consumer.c_str(), "COUNT",        count.c_str(),
                               "STREAMS",        stream.c_str(), ">"};
    constexpr int read_argc = sizeof(read_argv) / sizeof(read_argv[0]);
    std::vector<const char*> ack_argv;
    std::vector<std::size_t> ack_len;
    redisReply* held = nullptr;  // the previous batch: the XACK's ids point into it
    std::uint64_t acked = 0;
    std::uint64_t checksum = 0;  // keeps the "handler" from being optimised away
    for (;;) {
        const bool acking = !ack_argv.empty();
        if (acking) {
            redisAppendCommandArgv(c, static_cast<int>(ack_argv.size()), ack_argv.data(),
                                   ack_len.data());
        }
        const std::uint64_t owed = acking ? ack_argv.size() - 3 : 0;
        const bool reading = done.load(std::memory_order_relaxed) + owed < expected;
        if (reading) {
            redisAppendCommandArgv(c, read_argc, read_argv, nullptr);
        }
        void* r = nullptr;
        if (acking) {
            if (redisGetReply(c, &r) != REDIS_OK ||
                static_cast<redisReply*>(r)->type != REDIS_REPLY_INTEGER) {
                std::fprintf(stderr, "raw loop: XACK failed\n");
                std::exit(1);
            }
            const auto n = static_cast<std::uint64_t>(static_cast<redisReply*>(r)->integer);
            acked += n;
            done.fetch_add(n, std::memory_order_relaxed);  // a count the loops poll; no ordering
            freeReplyObject(r);
            freeReplyObject(held);
            held = nullptr;
            ack_argv.clear();
            ack_len.clear();
        }
        if (!reading) {
            break;
        }
        if (redisGetReply(c, &r) != REDIS_OK) {
            std::fprintf(stderr, "raw loop: XREADGROUP failed: %s\n", c->errstr);
            std::exit(1);
        }
        held = static_cast<redisReply*>(r);
        if (held->type != REDIS_REPLY_ARRAY || held->elements != 1 ||
            held->element[0]->element[1]->elements == 0) {
            freeReplyObject(held);  // nil: nothing new (only while another reader holds the rest)
            held = nullptr;
            continue;
        }
        const redisReply* entries = held->element[0]->element[1];
        ack_argv = {"XACK", stream.c_str(), group.c_str()};
        ack_len = {4, stream.size(), group.size()};
        for (std::size_t i = 0; i < entries->elements; ++i) {
            const redisReply* e = entries->element[i];
            const redisReply* fields = e->element[1];
            for (std::size_t f = 0; f < fields->elements; ++f) {
                checksum += fields->element[f]->len;  // the no-op handler
            }
            ack_argv.push_back(e->element[0]->str);
            ack_len.push_back(e->element[0]->len);
        }
    }
    freeReplyObject(held);
    if (checksum == 0) {
        std::fprintf(stderr, "raw loop: empty entries?\n");
    }
    return acked;
}

}  // namespace workerpool::bench
