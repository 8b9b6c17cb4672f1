#pragma once

/// @file
/// The configuration of a `stream_consumer` (`consumer_options`), what it reports
/// (`consumer_event`, `consumer_stats`, `consumer_stop_report`), and their validation.

#include <workerpool/options.hpp>
#include <workerpool/redis/stream_entry.hpp>
#include <workerpool/stats.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace workerpool::redis {

/// What a `consumer_event` reports.
enum class consumer_event_kind {
    connected,      ///< The connection was re-established; `count` = reconnections so far.
    disconnected,   ///< The connection broke, or the server answered "not now" (LOADING, BUSY,
                    ///< READONLY, ...); `detail` says why. Once per outage, however many
                    ///< reconnection attempts fail. Reading stops until `connected`.
    claimed,        ///< `count` entries idle on other consumers were claimed (XAUTOCLAIM).
    dead_lettered,  ///< `count` entries were copied to the dead-letter stream and acknowledged.
    redis_error,    ///< The server answered a command with a definite error; `detail` has its
                    ///< text.
    dead_letter_failed,  ///< `count` dead letters could not be written (`detail`: the server's
                         ///< reply); their entries stay pending and are tried again later.
};

/// Reported to `consumer_options::on_event`, on the consumer's reader thread (or in `stop`).
struct consumer_event {
    consumer_event_kind kind;  ///< What happened.
    std::size_t count = 0;     ///< How many entries (or reconnections) it concerns.
    std::string_view detail;   ///< Error text, empty otherwise. Valid during the call only.
};

namespace detail {

/// The pool options a `consumer_options` starts with: the dispatcher's defaults, except that an
/// idle worker sleeps at once (`spin_before_sleep` = 0). Entries arrive in batches a network round
/// trip apart, so polling for the next one after each batch only takes CPU from the reader thread
/// and, on a shared machine, from the server (docs/performance.md has the measurement).
inline options<stream_entry> consumer_pool_defaults() {
    options<stream_entry> o;
    o.spin_before_sleep = std::chrono::nanoseconds(0);
    return o;
}

}  // namespace detail

/// The configuration of a `stream_consumer`. Validated by its constructor, which throws
/// `std::invalid_argument` naming the first bad field.
struct consumer_options {
    /// Server address: a host name or IP address. hiredis 0.14 speaks plain TCP only: to reach a
    /// TLS port, run a TLS tunnel (e.g. stunnel in client mode) and point `host`/`port` at it.
    std::string host = "127.0.0.1";
    /// Server port, 1 to 65535.
    int port = 6379;
    /// ACL user name for AUTH (Redis 6+); empty = the default user. Needs `password`.
    std::string username;
    /// Password sent with AUTH after every connection and reconnection; empty = no AUTH. It
    /// never appears in an exception's message or an event.
    std::string password;
    /// The stream to read. Must not be empty. In Redis Cluster, give it a hash tag (`{jobs}`):
    /// the default dead-letter stream (`<stream>:dead`) keeps the tag, so both keys live in one
    /// slot, which the dead-letter transaction needs.
    std::string stream;
    /// The consumer group to read as. Must not be empty.
    std::string group;
    /// This consumer's name within the group; unique per live process. A process that restarts
    /// under the same name first re-runs what it left pending. Its connection is named
    /// "workerpool:<consumer>" (CLIENT LIST). Must not be empty.
    std::string consumer;
    /// Create the group (and the stream) if missing, starting at `group_start`. When false, a
    /// missing stream or group makes the constructor throw `redis_error`.
    bool create_group = false;
    /// Where a group created here starts: "0" for every entry already in the stream, "$" for new
    /// entries only.
    std::string group_start = "0";
    /// Entries asked for per read (XREADGROUP COUNT) and per claim (XAUTOCLAIM COUNT). Must be
    /// > 0.
    std::size_t batch = 64;
    /// Most entries held at once (queued, running, waiting to retry or to be acknowledged); reading
    /// stops at this bound, so the backlog stays in Redis. 0 = the pool's queue capacity. Must not
    /// exceed `pool.capacity`.
    std::size_t max_in_flight = 0;
    /// How long one read waits for new entries (XREADGROUP BLOCK) while nothing is held. Must be
    /// > 0.
    std::chrono::milliseconds block{100};
    /// While entries are held, reads wait at most this long, so that an entry's acknowledgement
    /// follows its handler's return within about this delay even when the stream is quiet.
    /// Shorter: acknowledged sooner, more reads. Must be > 0.
    std::chrono::milliseconds ack_delay{5};
    /// Limit on connecting. Must be > 0.
    std::chrono::milliseconds connect_timeout{2000};
    /// Limit on a reply (added to `block` for reads); a slower server counts as disconnected.
    /// Must be > 0.
    std::chrono::milliseconds command_timeout{5000};
    /// An entry pending on another consumer for longer than this is claimed and run here
    /// (XAUTOCLAIM, following its cursor while there is room). Live consumers refresh their own
    /// entries well within it, so only the entries of a consumer that stopped (or lost its
    /// connection) for this long are taken. Zero disables claiming. Must be >= 0.
    std::chrono::milliseconds claim_idle{30000};
    /// An entry is run at most this many times (deliveries counted by Redis, once per delivery to
    /// a handler): one already delivered this many times without being acknowledged (each
    /// process it was given to went away: it may be what kills them) goes to the dead-letter
    /// stream with `dl:reason` "too_many_deliveries" instead of running again. Checked on every
    /// path that re-delivers an entry: claiming, and this consumer name re-reading what it left
    /// pending. An entry's last allowed delivery runs alone in its process, so that a crash is
    /// charged to the entry that caused it and not to the ones that ran beside it. Zero: no
    /// limit.
    unsigned max_deliveries = 0;
    /// Where entries whose handler failed for good go; empty = `stream` + ":dead". Each dead
    /// letter holds `dl:id`, `dl:reason`, `dl:attempts`, `dl:error` and `dl:consumer`, then the
    /// original fields. Must differ from `stream`.
    std::string dead_letter_stream;
    /// First delay before reconnecting (and before retrying dead letters that could not be
    /// written); doubles up to `reconnect_max`. Must be > 0.
    std::chrono::milliseconds reconnect_min{50};
    /// Longest delay between reconnection attempts. Must be >= `reconnect_min`.
    std::chrono::milliseconds reconnect_max{5000};
    /// Observer of connection, claim, dead-letter and error events, called on the reader thread
    /// (and, for the last acknowledgements and dead letters, on the thread that calls `stop`),
    /// never on two threads at once. Exceptions are swallowed. Empty: no cost.
    std::function<void(const consumer_event&)> on_event{};
    /// The pool's options: the dispatcher's defaults, except `spin_before_sleep` = 0 (an idle
    /// worker sleeps at once; see `detail::consumer_pool_defaults`). Its `on_success` and
    /// `on_failure` still run: `on_success` just before the entry is booked for acknowledgement
    /// (it may move what it needs out of the entry; if it throws, the entry is acknowledged all
    /// the same and the pool counts the error), and `on_failure` just after the entry is booked
    /// for the dead-letter stream.
    options<stream_entry> pool = detail::consumer_pool_defaults();
};

/// Counters of a `stream_consumer`, with the pool's own statistics.
struct consumer_stats {
    std::uint64_t read = 0;           ///< Entries read (XREADGROUP), and own pending ones re-run.
    std::uint64_t claimed = 0;        ///< Entries claimed from other consumers.
    std::uint64_t acknowledged = 0;   ///< Entries acknowledged after their handler returned.
    std::uint64_t dead_lettered = 0;  ///< Entries copied to the dead-letter stream.
    /// Dead-letter writes that failed (each try of each entry); the entries stay pending.
    std::uint64_t dead_letter_failures = 0;
    std::uint64_t reconnects = 0;    ///< Connections re-established after a break.
    std::uint64_t redis_errors = 0;  ///< Error replies, definite and transient.
    std::size_t in_flight = 0;       ///< Entries held now (see `max_in_flight`).
    stats_snapshot pool;             ///< The dispatcher's statistics.
};

/// What `stream_consumer::stop` reports.
struct consumer_stop_report {
    /// Entries read but not finished: they stay pending in Redis, for a live consumer to claim
    /// after `claim_idle` or for this consumer name to re-run when it restarts.
    std::size_t left_pending = 0;
    /// Entries that finished but whose acknowledgement (or dead letter) could not be sent; they
    /// stay pending and will run again elsewhere.
    std::size_t unacknowledged = 0;
    /// True if the pool drained within the grace (see `shutdown_report::drained`).
    bool drained = false;
    /// Handlers still running after the grace (see `shutdown_report::stuck_workers`).
    std::size_t stuck_workers = 0;
};

namespace detail {

/// Throws `std::invalid_argument` "workerpool::redis: <where><field> <what>" unless `ok`.
inline void require(bool ok, const char* where, const char* field, const char* what) {
    if (!ok) {
        throw std::invalid_argument(std::string("workerpool::redis: ") + where + field + " " +
                                    what);
    }
}

/// Throws `std::invalid_argument` naming the first bad field of `o` (the pool's options too).
inline void validate(const consumer_options& o) {
    constexpr const char* in = "consumer_options.";
    require(!o.host.empty(), in, "host", "must not be empty");
    require(o.port > 0 && o.port <= 65535, in, "port", "must be in 1..65535");
    require(o.username.empty() || !o.password.empty(), in, "username",
            "needs consumer_options.password");
    require(!o.stream.empty(), in, "stream", "must not be empty");
    require(!o.group.empty(), in, "group", "must not be empty");
    require(!o.consumer.empty(), in, "consumer", "must not be empty");
    require(!o.group_start.empty(), in, "group_start", "must not be empty");
    require(o.batch > 0, in, "batch", "must be > 0");
    require(o.block.count() > 0, in, "block", "must be > 0");
    require(o.ack_delay.count() > 0, in, "ack_delay", "must be > 0");
    require(o.connect_timeout.count() > 0, in, "connect_timeout", "must be > 0");
    require(o.command_timeout.count() > 0, in, "command_timeout", "must be > 0");
    require(o.claim_idle.count() >= 0, in, "claim_idle", "must not be negative");
    require(o.dead_letter_stream != o.stream, in, "dead_letter_stream",
            "must differ from consumer_options.stream");
    require(o.reconnect_min.count() > 0, in, "reconnect_min", "must be > 0");
    require(o.reconnect_max >= o.reconnect_min, in, "reconnect_max",
            "must be >= consumer_options.reconnect_min");
    workerpool::detail::validate(o.pool);
    require(o.max_in_flight <= o.pool.capacity, in, "max_in_flight",
            "must not exceed consumer_options.pool.capacity");
}

}  // namespace detail

}  // namespace workerpool::redis
