#pragma once

/// @file
/// Feeds a `dispatcher` from a Redis Streams consumer group, so that the same pool can run in
/// many processes on many machines behind one durable queue. Needs hiredis; link
/// `workerpool::redis`, which CMake defines only when hiredis is found.
///
/// Delivery is at-least-once: an entry is acknowledged (XACK) only after its handler returned,
/// and an entry left pending by a consumer that died is claimed (XAUTOCLAIM) and run again by a
/// live one.

#include <workerpool/dispatcher.hpp>
#include <workerpool/options.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

/// @namespace workerpool::redis
/// The Redis Streams integration: `stream_consumer` and what it needs.
namespace workerpool::redis {

/// One stream entry, as the handler receives it.
struct stream_entry {
    /// The entry's ID in the stream, e.g. "1700000000000-0".
    std::string id;
    /// The entry's field/value pairs, in stream order (a field may repeat).
    std::vector<std::pair<std::string, std::string>> fields;

    /// Returns the value of the first field called `name`, or null if there is none.
    [[nodiscard]] const std::string* find(std::string_view name) const noexcept {
        for (const auto& [field, value] : fields) {
            if (field == name) {
                return &value;
            }
        }
        return nullptr;
    }
};

/// Thrown when the server cannot be reached at construction, or answers a set-up command with an
/// error (a missing stream or group, a wrong type).
class redis_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// What a `consumer_event` reports.
enum class consumer_event_kind {
    connected,      ///< The connection was (re-)established; `count` = reconnections so far.
    disconnected,   ///< The connection broke; `detail` says why. Reading stops until reconnected.
    claimed,        ///< `count` entries idle on other consumers were claimed (XAUTOCLAIM).
    dead_lettered,  ///< `count` entries were copied to the dead-letter stream and acknowledged.
    redis_error,    ///< The server answered a command with an error; `detail` has its text.
};

/// Reported to `consumer_options::on_event`, on the consumer's reader thread.
struct consumer_event {
    consumer_event_kind kind;  ///< What happened.
    std::size_t count = 0;     ///< How many entries (or reconnections) it concerns.
    std::string_view detail;   ///< Error text, empty otherwise. Valid during the call only.
};

/// The configuration of a `stream_consumer`. Validated by its constructor, which throws
/// `std::invalid_argument` naming the first bad field.
struct consumer_options {
    /// Server address: a host name or IP address.
    std::string host = "127.0.0.1";
    /// Server port, 1 to 65535.
    int port = 6379;
    /// The stream to read. Must not be empty.
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
    /// Entries asked for per read (XREADGROUP COUNT). Must be > 0.
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
    /// (XAUTOCLAIM). Live consumers refresh their own entries well within it, so only the entries
    /// of a consumer that stopped (or lost its connection) for this long are taken. Zero disables
    /// claiming. Must be >= 0.
    std::chrono::milliseconds claim_idle{30000};
    /// An idle entry of another consumer that was already delivered this many times is not run
    /// again: it goes to the dead-letter stream with `dl:reason` "too_many_deliveries" (each
    /// consumer it was given to went away without acknowledging it: it may be what kills them).
    /// Zero: no limit. Needs `claim_idle` > 0.
    unsigned max_deliveries = 0;
    /// Where entries whose handler failed for good go; empty = `stream` + ":dead". Each dead
    /// letter holds the original fields plus `dl:id`, `dl:reason`, `dl:attempts`, `dl:error` and
    /// `dl:consumer`.
    std::string dead_letter_stream;
    /// First delay before reconnecting; doubles up to `reconnect_max`. Must be > 0.
    std::chrono::milliseconds reconnect_min{50};
    /// Longest delay between reconnection attempts. Must be >= `reconnect_min`.
    std::chrono::milliseconds reconnect_max{5000};
    /// Observer of connection, claim, dead-letter and error events, called on the reader thread.
    /// Exceptions are swallowed. Empty: no cost.
    std::function<void(const consumer_event&)> on_event{};
    /// The pool's options. Its `on_success` and `on_failure` still run, after the consumer's own
    /// bookkeeping (acknowledging, dead-lettering).
    options<stream_entry> pool{};
};

/// Counters of a `stream_consumer`, with the pool's own statistics.
struct consumer_stats {
    std::uint64_t read = 0;           ///< Entries read by XREADGROUP (own pending ones included).
    std::uint64_t claimed = 0;        ///< Entries claimed from other consumers.
    std::uint64_t acknowledged = 0;   ///< Entries acknowledged after their handler returned.
    std::uint64_t dead_lettered = 0;  ///< Entries copied to the dead-letter stream.
    std::uint64_t reconnects = 0;     ///< Connections re-established after a break.
    std::uint64_t redis_errors = 0;   ///< Error replies to reads, claims or acknowledgements.
    std::size_t in_flight = 0;        ///< Entries held now (see `max_in_flight`).
    stats_snapshot pool;              ///< The dispatcher's statistics.
};

/// What `stream_consumer::stop` reports.
struct consumer_stop_report {
    /// Entries read but not finished: they stay pending in Redis, for a live consumer to claim
    /// after `claim_idle` or for this consumer name to re-run when it restarts.
    std::size_t left_pending = 0;
    /// Entries that finished but whose acknowledgement could not be sent (connection down at the
    /// end); they will run again elsewhere.
    std::size_t unacknowledged = 0;
    /// True if the pool drained within the grace (see `shutdown_report::drained`).
    bool drained = false;
    /// Handlers still running after the grace (see `shutdown_report::stuck_workers`).
    std::size_t stuck_workers = 0;
};

namespace detail {

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

struct context_deleter {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
};

inline timeval to_timeval(std::chrono::milliseconds d) noexcept {
    timeval tv{};
    tv.tv_sec = static_cast<decltype(tv.tv_sec)>(d.count() / 1000);
    tv.tv_usec = static_cast<decltype(tv.tv_usec)>((d.count() % 1000) * 1000);
    return tv;
}

inline std::string reply_text(const redisReply* r) {
    if (r == nullptr || r->str == nullptr) {
        return {};
    }
    return std::string(r->str, r->len);
}

inline bool is_error(const redisReply* r) noexcept {
    return r != nullptr && r->type == REDIS_REPLY_ERROR;
}

/// One blocking hiredis connection; used by one thread at a time.
class connection {
public:
    /// Connects; on failure `ok()` is false and `error()` says why.
    connection(const std::string& host, int port, std::chrono::milliseconds connect_timeout,
               std::chrono::milliseconds reply_timeout)
        : context_(redisConnectWithTimeout(host.c_str(), port, to_timeval(connect_timeout))) {
        if (context_ == nullptr) {
            error_ = "out of memory";
        } else if (context_->err != 0) {
            error_ = context_->errstr;
        } else if (redisSetTimeout(context_.get(), to_timeval(reply_timeout)) != REDIS_OK) {
            error_ = "cannot set the socket timeout";
        }
    }

    [[nodiscard]] bool ok() const noexcept {
        return context_ != nullptr && context_->err == 0 && error_.empty();
    }

    [[nodiscard]] std::string error() const {
        if (!error_.empty()) {
            return error_;
        }
        return context_ != nullptr && context_->err != 0 ? std::string(context_->errstr)
                                                         : std::string();
    }

    /// Sends one command and waits for its reply; null when the connection failed.
    reply_ptr command(const std::vector<std::string>& args) {
        if (!append(args)) {
            return nullptr;
        }
        return reply();
    }

    /// Queues a command (pipelining); read its reply with `reply()`.
    bool append(const std::vector<std::string>& args) {
        if (!ok()) {
            return false;
        }
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        argv.reserve(args.size());
        lengths.reserve(args.size());
        for (const std::string& a : args) {
            argv.push_back(a.data());
            lengths.push_back(a.size());
        }
        return redisAppendCommandArgv(context_.get(), static_cast<int>(args.size()), argv.data(),
                                      lengths.data()) == REDIS_OK;
    }

    /// The next reply of a queued command; null when the connection failed.
    reply_ptr reply() {
        if (!ok()) {
            return nullptr;
        }
        void* r = nullptr;
        if (redisGetReply(context_.get(), &r) != REDIS_OK) {
            return nullptr;
        }
        return reply_ptr(static_cast<redisReply*>(r));
    }

private:
    std::unique_ptr<redisContext, context_deleter> context_;
    std::string error_;
};

/// Parses one stream entry, [id, [field, value, ...]]; nullopt for an entry whose body was
/// deleted from the stream (its field array is nil).
inline std::optional<stream_entry> parse_entry(const redisReply* r) {
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        return std::nullopt;
    }
    stream_entry e;
    e.id = reply_text(r->element[0]);
    const redisReply* body = r->element[1];
    if (e.id.empty() || body == nullptr || body->type != REDIS_REPLY_ARRAY) {
        return std::nullopt;
    }
    e.fields.reserve(body->elements / 2);
    for (std::size_t i = 0; i + 1 < body->elements; i += 2) {
        e.fields.emplace_back(reply_text(body->element[i]), reply_text(body->element[i + 1]));
    }
    return e;
}

/// The id of an entry reply, even when its body is gone.
inline std::string entry_id(const redisReply* r) {
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        return {};
    }
    return reply_text(r->element[0]);
}

/// Copies an entry to the dead-letter stream only if this call is the one that acknowledges it,
/// so a dead letter is written once even when two consumers fail the same entry.
/// KEYS: stream, dead-letter stream. ARGV: group, id, then the dead letter's field/value pairs.
inline constexpr const char* dead_letter_script =
    "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then "
    "redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3)) return 1 end return 0";

inline void require(bool ok, const char* field, const char* what) {
    if (!ok) {
        throw std::invalid_argument(std::string("workerpool::redis: consumer_options.") + field +
                                    " " + what);
    }
}

/// Throws `std::invalid_argument` naming the first bad field of `o` (the pool's options too).
inline void validate(const consumer_options& o) {
    require(!o.host.empty(), "host", "must not be empty");
    require(o.port > 0 && o.port <= 65535, "port", "must be in 1..65535");
    require(!o.stream.empty(), "stream", "must not be empty");
    require(!o.group.empty(), "group", "must not be empty");
    require(!o.consumer.empty(), "consumer", "must not be empty");
    require(!o.group_start.empty(), "group_start", "must not be empty");
    require(o.batch > 0, "batch", "must be > 0");
    require(o.block.count() > 0, "block", "must be > 0");
    require(o.ack_delay.count() > 0, "ack_delay", "must be > 0");
    require(o.connect_timeout.count() > 0, "connect_timeout", "must be > 0");
    require(o.command_timeout.count() > 0, "command_timeout", "must be > 0");
    require(o.claim_idle.count() >= 0, "claim_idle", "must not be negative");
    require(o.max_deliveries == 0 || o.claim_idle.count() > 0, "max_deliveries",
            "needs consumer_options.claim_idle > 0 (it applies to claimed entries)");
    require(o.reconnect_min.count() > 0, "reconnect_min", "must be > 0");
    require(o.reconnect_max >= o.reconnect_min, "reconnect_max",
            "must be >= consumer_options.reconnect_min");
    workerpool::detail::validate(o.pool);
    require(o.max_in_flight <= o.pool.capacity, "max_in_flight",
            "must not exceed consumer_options.pool.capacity");
}

}  // namespace detail

/// Reads one consumer group of one Redis stream and runs each entry on its own `dispatcher`.
///
/// The reader thread reads (XREADGROUP) only as many entries as it may hold (`max_in_flight`), so
/// a slow pool leaves the backlog in Redis instead of buffering it. An entry is acknowledged
/// (XACK) after its handler returned; one that fails for good (attempts exhausted, or a
/// `permanent_error`) is copied to the dead-letter stream and acknowledged in one atomic step.
/// Entries pending on another consumer for longer than `claim_idle` are claimed (XAUTOCLAIM) and
/// run here. When the connection breaks, reading pauses, running entries go on, and the reader
/// reconnects with exponential backoff; acknowledgements are sent once it is back.
///
/// Delivery is at-least-once: a consumer killed between running an entry and acknowledging it
/// leaves it pending, and another consumer runs it again. Handlers should be idempotent.
///
/// Thread safety: `stats()` from any thread; `stop()` and the destructor from one thread, not
/// from a handler.
class stream_consumer {
public:
    /// Connects, checks (or creates) the group, starts the pool with `o.pool` and the reader.
    /// `handler` is called as `handler(stream_entry&, const std::stop_token&)` or
    /// `handler(stream_entry&)`, as a `dispatcher` handler; it signals failure by throwing.
    /// Throws: `std::invalid_argument` for bad options; `redis_error` when the server cannot be
    /// reached or the stream/group is missing (and `create_group` is false).
    template <class Handler>
    stream_consumer(Handler handler, consumer_options o)
        : options_((detail::validate(o), std::move(o))),
          dead_letter_stream_(options_.dead_letter_stream.empty() ? options_.stream + ":dead"
                                                                  : options_.dead_letter_stream),
          max_in_flight_(options_.max_in_flight == 0 ? options_.pool.capacity
                                                     : options_.max_in_flight) {
        connection_ = connect();
        if (!connection_->ok()) {
            throw redis_error("workerpool::redis: cannot connect to " + options_.host + ":" +
                              std::to_string(options_.port) + ": " + connection_->error());
        }
        check_group();

        workerpool::options<stream_entry> pool = options_.pool;
        pool.on_success = [this, user = options_.pool.on_success](stream_entry& e) {
            finished(e.id);
            if (user) {
                user(e);
            }
        };
        pool.on_failure = [this, user = options_.pool.on_failure](failure<stream_entry>&& f) {
            failed(f);
            if (user) {
                user(std::move(f));
            }
        };
        pool_.emplace(std::move(handler), std::move(pool));
        reader_ = std::jthread([this](std::stop_token st) { read_loop(st); });
    }

    stream_consumer(const stream_consumer&) = delete;
    stream_consumer& operator=(const stream_consumer&) = delete;

    /// Calls `stop(options.pool.destructor_grace)` if `stop` was not called. Never throws: if
    /// that fails (out of memory), the pool's own destructor still shuts it down.
    ~stream_consumer() {
        try {
            (void)stop(options_.pool.destructor_grace);
        } catch (...) {
            // Entries not acknowledged stay pending in Redis; nothing is lost.
        }
    }

    /// Stops reading, shuts the pool down with `grace` (see `dispatcher::shutdown`), sends the
    /// acknowledgements and dead letters still due, and closes the connection. Entries not
    /// finished stay pending in Redis. Idempotent: later calls return an empty report.
    /// Blocks: up to about `block + grace + stuck_grace` (+ one reconnection attempt).
    consumer_stop_report stop(std::chrono::nanoseconds grace) {
        consumer_stop_report report;
        if (!reader_.joinable()) {
            return report;
        }
        reader_.request_stop();
        cv_.notify_all();
        reader_.join();

        shutdown_report<stream_entry> pool_report = pool_->shutdown(grace);
        report.drained = pool_report.drained;
        report.stuck_workers = pool_report.stuck_workers;
        // The handed-back entries (and cancelled ones) stay in in_flight_: pending in Redis.
        // One last flush, reconnecting once if the connection is down.
        if (!connection_->ok()) {
            connection_ = connect();
        }
        flush();
        std::lock_guard lock(mutex_);
        report.unacknowledged = to_ack_.size() + to_dead_letter_.size();
        report.left_pending = in_flight_.size() > report.unacknowledged
                                  ? in_flight_.size() - report.unacknowledged
                                  : 0;
        // Nothing is held here any more: what is left is pending in Redis.
        in_flight_.clear();
        to_ack_.clear();
        to_dead_letter_.clear();
        return report;
    }

    /// The consumer's counters and the pool's statistics. Thread safety: any thread.
    [[nodiscard]] consumer_stats stats() const {
        consumer_stats s;
        s.read = read_.load(std::memory_order_relaxed);  // statistics only: no ordering needed
        s.claimed = claimed_.load(std::memory_order_relaxed);
        s.acknowledged = acknowledged_.load(std::memory_order_relaxed);
        s.dead_lettered = dead_lettered_.load(std::memory_order_relaxed);
        s.reconnects = reconnects_.load(std::memory_order_relaxed);
        s.redis_errors = redis_errors_.load(std::memory_order_relaxed);
        {
            std::lock_guard lock(mutex_);
            s.in_flight = in_flight_.size();
        }
        s.pool = pool_->stats();
        return s;
    }

    /// The options in use (after validation).
    [[nodiscard]] const consumer_options& options() const noexcept { return options_; }

    /// The dead-letter stream's name.
    [[nodiscard]] const std::string& dead_letter_stream() const noexcept {
        return dead_letter_stream_;
    }

private:
    struct dead_letter {
        stream_entry entry;
        const char* reason;  // to_string(failure_reason), or "too_many_deliveries"
        unsigned attempts;
        std::string error;
    };

    /// A new connection, named "workerpool:<consumer>" so that CLIENT LIST shows whose it is.
    [[nodiscard]] std::unique_ptr<detail::connection> connect() const {
        auto c = std::make_unique<detail::connection>(options_.host, options_.port,
                                                      options_.connect_timeout,
                                                      options_.block + options_.command_timeout);
        // A name Redis refuses (it has a space) only costs the label, not the connection.
        (void)c->command({"CLIENT", "SETNAME", "workerpool:" + options_.consumer});
        return c;
    }

    void check_group() {
        if (options_.create_group) {
            detail::reply_ptr r =
                connection_->command({"XGROUP", "CREATE", options_.stream, options_.group,
                                      options_.group_start, "MKSTREAM"});
            if (r == nullptr) {
                throw redis_error("workerpool::redis: XGROUP CREATE failed: " +
                                  connection_->error());
            }
            if (detail::is_error(r.get()) &&
                detail::reply_text(r.get()).rfind("BUSYGROUP", 0) != 0) {
                throw redis_error("workerpool::redis: cannot create group '" + options_.group +
                                  "' on stream '" + options_.stream +
                                  "': " + detail::reply_text(r.get()));
            }
            return;
        }
        detail::reply_ptr r = connection_->command({"XINFO", "GROUPS", options_.stream});
        if (r == nullptr) {
            throw redis_error("workerpool::redis: XINFO GROUPS failed: " + connection_->error());
        }
        if (detail::is_error(r.get())) {
            throw redis_error("workerpool::redis: stream '" + options_.stream +
                              "' cannot be read: " + detail::reply_text(r.get()) +
                              " (set consumer_options.create_group to create it)");
        }
        for (std::size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; ++g) {
            const redisReply* info = r->element[g];
            for (std::size_t i = 0; info->type == REDIS_REPLY_ARRAY && i + 1 < info->elements;
                 i += 2) {
                if (detail::reply_text(info->element[i]) == "name" &&
                    detail::reply_text(info->element[i + 1]) == options_.group) {
                    return;
                }
            }
        }
        throw redis_error("workerpool::redis: stream '" + options_.stream + "' has no group '" +
                          options_.group + "' (set consumer_options.create_group to create it)");
    }

    // --- called on pool threads ------------------------------------------------------------

    void finished(const std::string& id) {
        {
            std::lock_guard lock(mutex_);
            to_ack_.push_back(id);
        }
        cv_.notify_one();
    }

    void failed(const failure<stream_entry>& f) {
        {
            std::lock_guard lock(mutex_);
            if (f.reason != failure_reason::cancelled) {
                // A cancelled entry (shutdown cut it short) is left pending for another consumer.
                std::string what;
                if (f.error) {
                    try {
                        std::rethrow_exception(f.error);
                    } catch (const std::exception& e) {
                        what = e.what();
                    } catch (...) {
                        what = "non-standard exception";
                    }
                }
                to_dead_letter_.push_back(
                    {f.request, to_string(f.reason), f.attempts, std::move(what)});
            }
        }
        cv_.notify_one();
    }

    // --- the reader thread (and stop(), once the reader is joined) ----------------------------

    void read_loop(const std::stop_token& st) {
        auto backoff = options_.reconnect_min;
        bool own_history = true;  // first re-run what this consumer name left pending
        std::string history_cursor = "0";
        auto next_claim = std::chrono::steady_clock::now();
        while (!st.stop_requested()) {
            if (!connection_->ok()) {
                emit({consumer_event_kind::disconnected, 0, connection_->error()});
                if (!wait(st, backoff)) {
                    break;
                }
                backoff = std::min(backoff * 2, options_.reconnect_max);
                connection_ = connect();
                if (connection_->ok()) {
                    backoff = options_.reconnect_min;
                    const auto n = reconnects_.fetch_add(1, std::memory_order_relaxed) + 1;
                    emit({consumer_event_kind::connected, static_cast<std::size_t>(n), {}});
                    // A reply lost with the old connection may have delivered entries to us.
                    own_history = true;
                    history_cursor = "0";
                }
                continue;
            }
            flush();
            if (options_.claim_idle.count() > 0 && std::chrono::steady_clock::now() >= next_claim) {
                refresh_own();
                claim();
                next_claim = std::chrono::steady_clock::now() + options_.claim_idle / 4;
            }
            const std::size_t room = free_room();
            if (room == 0) {
                std::unique_lock lock(mutex_);
                cv_.wait_for(lock, st, options_.block, [&] {
                    return in_flight_.size() < max_in_flight_ || !to_ack_.empty() ||
                           !to_dead_letter_.empty();
                });
                continue;
            }
            read(st, room, own_history, history_cursor);
        }
    }

    /// Sleeps `d` or until stop is requested; false if stop was requested.
    bool wait(const std::stop_token& st, std::chrono::milliseconds d) {
        std::unique_lock lock(mutex_);
        return !cv_.wait_for(lock, st, d, [] { return false; }) && !st.stop_requested();
    }

    std::size_t free_room() {
        std::lock_guard lock(mutex_);
        return in_flight_.size() >= max_in_flight_ ? 0 : max_in_flight_ - in_flight_.size();
    }

    void read(const std::stop_token& st, std::size_t room, bool& own_history,
              std::string& history_cursor) {
        const std::size_t count = std::min(room, options_.batch);
        std::vector<std::string> cmd{"XREADGROUP",      "GROUP", options_.group,
                                     options_.consumer, "COUNT", std::to_string(count)};
        if (!own_history) {
            // Held entries will want acknowledging soon: do not sit in a long read meanwhile.
            const auto wait = room < max_in_flight_ ? std::min(options_.block, options_.ack_delay)
                                                    : options_.block;
            cmd.insert(cmd.end(), {"BLOCK", std::to_string(wait.count())});
        }
        cmd.insert(cmd.end(), {"STREAMS", options_.stream, own_history ? history_cursor : ">"});
        detail::reply_ptr r = checked(cmd);
        if (r == nullptr) {
            if (connection_->ok()) {
                (void)wait(st, options_.block);  // an error reply (the group deleted?): no spin
            }
            return;  // or the connection broke: the loop reconnects
        }
        const redisReply* entries = nullptr;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
            r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
            entries = r->element[0]->element[1];
        }
        if (entries == nullptr || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0) {
            own_history = false;  // nil (BLOCK timed out) or the own pending list is exhausted
            return;
        }
        std::vector<std::string> gone;
        for (std::size_t i = 0; i < entries->elements; ++i) {
            if (own_history) {
                history_cursor = detail::entry_id(entries->element[i]);
            }
            std::optional<stream_entry> e = detail::parse_entry(entries->element[i]);
            if (!e) {
                gone.push_back(detail::entry_id(entries->element[i]));
                continue;
            }
            read_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            start(std::move(*e));
        }
        if (!gone.empty()) {
            // Pending entries whose body was trimmed away: nothing to run, stop tracking them.
            std::vector<std::string> ack{"XACK", options_.stream, options_.group};
            ack.insert(ack.end(), gone.begin(), gone.end());
            (void)connection_->command(ack);
        }
    }

    /// Hands an entry to the pool unless it is already held here.
    void start(stream_entry&& e) {
        {
            std::lock_guard lock(mutex_);
            if (!in_flight_.insert(e.id).second) {
                return;  // claimed or re-read while still running here
            }
        }
        if (pool_->submit(std::move(e)) != submit_status::accepted) {
            // Only at shutdown (never: the reader is joined first) or from a pool thread (never).
            // A refused request is untouched, so its id is still there.
            std::lock_guard lock(mutex_);
            in_flight_.erase(e.id);  // NOLINT(bugprone-use-after-move): refused, not moved
        }
    }

    /// Resets the idle time of the entries held here (XCLAIM to ourselves, JUSTID), so that
    /// other consumers do not claim entries that are only waiting in this pool's queue.
    void refresh_own() {
        std::vector<std::string> ids;
        {
            std::lock_guard lock(mutex_);
            ids.assign(in_flight_.begin(), in_flight_.end());
        }
        constexpr std::size_t chunk = 512;
        for (std::size_t i = 0; i < ids.size(); i += chunk) {
            std::vector<std::string> cmd{"XCLAIM", options_.stream, options_.group,
                                         options_.consumer, "0"};
            const std::size_t end = std::min(ids.size(), i + chunk);
            cmd.insert(cmd.end(), ids.begin() + static_cast<std::ptrdiff_t>(i),
                       ids.begin() + static_cast<std::ptrdiff_t>(end));
            cmd.emplace_back("JUSTID");
            if (checked(cmd) == nullptr) {
                return;
            }
        }
    }

    /// Claims entries idle for `claim_idle` on other consumers, as many as there is room for.
    void claim() {
        std::size_t room = std::min(free_room(), options_.batch);
        if (room == 0) {
            return;
        }
        if (options_.max_deliveries > 0) {
            room -= std::min(room, dead_letter_redelivered(room));
            if (room == 0) {
                return;
            }
        }
        detail::reply_ptr r =
            checked({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer,
                     std::to_string(options_.claim_idle.count()), claim_cursor_, "COUNT",
                     std::to_string(room)});
        if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
            return;
        }
        claim_cursor_ = detail::reply_text(r->element[0]);
        if (claim_cursor_.empty()) {
            claim_cursor_ = "0-0";
        }
        const redisReply* entries = r->element[1];
        std::size_t n = 0;
        for (std::size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; ++i) {
            std::optional<stream_entry> e = detail::parse_entry(entries->element[i]);
            if (e) {
                ++n;
                start(std::move(*e));
            }
        }
        if (n > 0) {
            claimed_.fetch_add(n, std::memory_order_relaxed);  // statistics only
            emit({consumer_event_kind::claimed, n, {}});
        }
    }

    /// Dead-letters, without running them, up to `limit` entries idle for `claim_idle` on other
    /// consumers that were delivered `max_deliveries` times already (each delivery's consumer
    /// went away without acknowledging: likely an entry that kills its consumer). Returns how
    /// many it took.
    std::size_t dead_letter_redelivered(std::size_t limit) {
        detail::reply_ptr pending =
            checked({"XPENDING", options_.stream, options_.group, "IDLE",
                     std::to_string(options_.claim_idle.count()), "-", "+", std::to_string(limit)});
        if (pending == nullptr) {
            return 0;
        }
        std::vector<std::string> cmd{"XCLAIM", options_.stream, options_.group, options_.consumer,
                                     std::to_string(options_.claim_idle.count())};
        const std::size_t ids = cmd.size();
        for (std::size_t i = 0; pending->type == REDIS_REPLY_ARRAY && i < pending->elements; ++i) {
            const redisReply* p = pending->element[i];
            if (p->type == REDIS_REPLY_ARRAY && p->elements == 4 &&
                p->element[3]->type == REDIS_REPLY_INTEGER &&
                p->element[3]->integer >= static_cast<long long>(options_.max_deliveries) &&
                detail::reply_text(p->element[1]) != options_.consumer) {
                cmd.push_back(detail::reply_text(p->element[0]));
            }
        }
        if (cmd.size() == ids) {
            return 0;
        }
        // Take them (their bodies come with the claim), then dead-letter them like a failure.
        detail::reply_ptr r = checked(cmd);
        if (r == nullptr) {
            return 0;
        }
        std::size_t taken = 0;
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
            std::optional<stream_entry> e = detail::parse_entry(r->element[i]);
            if (e && in_flight_.insert(e->id).second) {
                ++taken;
                to_dead_letter_.push_back({std::move(*e), "too_many_deliveries", 0,
                                           "delivered " + std::to_string(options_.max_deliveries) +
                                               " times or more without being acknowledged"});
            }
        }
        return taken;
    }

    /// Sends the acknowledgements and dead letters due. What cannot be sent (connection down)
    /// stays queued for the next flush.
    void flush() {
        std::vector<std::string> acks;
        std::vector<dead_letter> dead;
        {
            std::lock_guard lock(mutex_);
            acks.swap(to_ack_);
            dead.swap(to_dead_letter_);
        }
        std::size_t acked = 0;
        if (!acks.empty()) {
            std::vector<std::string> cmd{"XACK", options_.stream, options_.group};
            cmd.insert(cmd.end(), acks.begin(), acks.end());
            detail::reply_ptr r = connection_->command(cmd);
            if (r == nullptr) {
                std::lock_guard lock(mutex_);
                to_ack_.insert(to_ack_.end(), acks.begin(), acks.end());
                acks.clear();
            } else if (detail::is_error(r.get())) {
                report_error(r.get());  // e.g. the group is gone: these can never be acknowledged
            } else {
                acked = acks.size();
            }
        }
        std::size_t written = 0;
        std::size_t sent = 0;
        for (const dead_letter& d : dead) {
            if (!connection_->append(dead_letter_command(d))) {
                break;
            }
            ++sent;
        }
        std::size_t replied = 0;
        for (; replied < sent; ++replied) {
            detail::reply_ptr r = connection_->reply();
            if (r == nullptr) {
                break;
            }
            if (detail::is_error(r.get())) {
                report_error(r.get());
            } else if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
                ++written;
            }
        }
        {
            std::lock_guard lock(mutex_);
            for (const std::string& id : acks) {
                in_flight_.erase(id);
            }
            for (std::size_t i = 0; i < dead.size(); ++i) {
                if (i < replied) {
                    in_flight_.erase(dead[i].entry.id);
                } else {
                    to_dead_letter_.push_back(std::move(dead[i]));  // resent after reconnecting
                }
            }
        }
        acknowledged_.fetch_add(acked, std::memory_order_relaxed);  // statistics only
        if (written > 0) {
            dead_lettered_.fetch_add(written, std::memory_order_relaxed);  // statistics only
            emit({consumer_event_kind::dead_lettered, written, {}});
        }
    }

    [[nodiscard]] std::vector<std::string> dead_letter_command(const dead_letter& d) const {
        std::vector<std::string> cmd{"EVAL",
                                     detail::dead_letter_script,
                                     "2",
                                     options_.stream,
                                     dead_letter_stream_,
                                     options_.group,
                                     d.entry.id,
                                     "dl:id",
                                     d.entry.id,
                                     "dl:reason",
                                     d.reason,
                                     "dl:attempts",
                                     std::to_string(d.attempts),
                                     "dl:error",
                                     d.error,
                                     "dl:consumer",
                                     options_.consumer};
        for (const auto& [field, value] : d.entry.fields) {
            cmd.push_back(field);
            cmd.push_back(value);
        }
        return cmd;
    }

    /// Runs a command on the reader's connection; null when the connection broke or the server
    /// answered with an error (reported through `report_error`).
    detail::reply_ptr checked(const std::vector<std::string>& args) {
        detail::reply_ptr r = connection_->command(args);
        if (r != nullptr && detail::is_error(r.get())) {
            report_error(r.get());
            return nullptr;
        }
        return r;
    }

    void report_error(const redisReply* r) {
        redis_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        const std::string text = detail::reply_text(r);
        emit({consumer_event_kind::redis_error, 1, text});
    }

    void emit(const consumer_event& e) noexcept {
        if (!options_.on_event) {
            return;
        }
        try {
            options_.on_event(e);
        } catch (...) {
            // An observer must not stop the reader.
        }
    }

    const consumer_options options_;
    const std::string dead_letter_stream_;
    const std::size_t max_in_flight_;

    // Shared between the reader and the pool's threads, under mutex_.
    mutable std::mutex mutex_;
    std::condition_variable_any cv_;  // completions and stop wake the reader
    std::vector<std::string> to_ack_;
    std::vector<dead_letter> to_dead_letter_;
    std::unordered_set<std::string> in_flight_;  // read here and not yet acknowledged

    // Reader-only (and stop(), after the reader is joined).
    std::unique_ptr<detail::connection> connection_;
    std::string claim_cursor_ = "0-0";

    // Statistics: relaxed counters, read by stats() from any thread.
    std::atomic<std::uint64_t> read_{0};
    std::atomic<std::uint64_t> claimed_{0};
    std::atomic<std::uint64_t> acknowledged_{0};
    std::atomic<std::uint64_t> dead_lettered_{0};
    std::atomic<std::uint64_t> reconnects_{0};
    std::atomic<std::uint64_t> redis_errors_{0};

    // Destroyed first: the pool's callbacks use the members above.
    std::optional<dispatcher<stream_entry>> pool_;
    std::jthread reader_;
};

}  // namespace workerpool::redis
