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
#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/acknowledger.hpp>
#include <workerpool/redis/detail/connection.hpp>
#include <workerpool/redis/detail/group.hpp>
#include <workerpool/redis/detail/ledger.hpp>
#include <workerpool/redis/detail/link.hpp>
#include <workerpool/redis/detail/reader.hpp>
#include <workerpool/redis/detail/recovery.hpp>
#include <workerpool/redis/detail/refusals.hpp>
#include <workerpool/redis/detail/stream_id.hpp>
#include <workerpool/redis/stream_entry.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <new>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace workerpool::redis {

/// Reads one consumer group of one Redis stream and runs each entry on its own `dispatcher`.
///
/// The reader thread reads (XREADGROUP) only as many entries as it may hold (`max_in_flight`), so
/// a slow pool leaves the backlog in Redis instead of buffering it. An entry is acknowledged
/// (XACK) after its handler returned; one that fails for good (attempts exhausted, or a
/// `permanent_error`) is copied to the dead-letter stream and acknowledged in one atomic step,
/// and stays pending if the dead letter cannot be written. Entries pending on another consumer
/// for longer than `claim_idle` are claimed (XAUTOCLAIM) and run here. When the connection
/// breaks, or the server answers "not now" (LOADING, BUSY, READONLY, ...), reading pauses,
/// running entries go on, and the reader reconnects with exponential backoff; what it owes
/// (acknowledgements, dead letters) is sent once the server answers again.
///
/// Delivery is at-least-once: a consumer killed between running an entry and acknowledging it
/// leaves it pending, and another consumer runs it again. Handlers should be idempotent.
///
/// Lifecycle: the constructor connects, checks the group and starts the pool and the reader
/// thread; `stop()` (or the destructor) stops reading, shuts the pool down and sends what is
/// owed.
///
/// Thread safety: `stats()` from any thread; `stop()` and the destructor from one thread, not
/// from a handler.
class stream_consumer {
public:
    /// Connects (and authenticates), checks (or creates) the group, starts the pool with
    /// `o.pool` and the reader. `handler` is called as `handler(stream_entry&, const
    /// std::stop_token&)` or `handler(stream_entry&)`, as a `dispatcher` handler; it signals
    /// failure by throwing.
    /// Throws: `std::invalid_argument` for bad options; `redis_error` when the server cannot be
    /// reached, refuses the credentials, or the stream/group is missing (and `create_group` is
    /// false).
    template <class Handler>
    stream_consumer(Handler handler, consumer_options o)
        : options_((detail::validate(o), std::move(o))),
          dead_letter_stream_(options_.dead_letter_stream.empty() ? options_.stream + ":dead"
                                                                  : options_.dead_letter_stream),
          max_in_flight_(options_.max_in_flight == 0 ? options_.pool.capacity
                                                     : options_.max_in_flight),
          ledger_(max_in_flight_),
          link_(detail::endpoint{options_.host, options_.port, options_.username, options_.password,
                                 options_.connect_timeout,
                                 options_.block + options_.command_timeout,
                                 "workerpool:" + options_.consumer},
                options_.reconnect_min, options_.reconnect_max),
          reader_(options_), acks_(options_, dead_letter_stream_), recovery_(options_) {
        const detail::open_result r = link_.connect();
        if (r.status != detail::reply_class::ok) {
            throw redis_error("workerpool::redis: " + r.error + detail::auth_hint(r.error));
        }
        detail::ensure_group(link_.get(), options_);

        workerpool::options<stream_entry> pool = options_.pool;
        pool.on_success = [this, user = options_.pool.on_success](stream_entry& e) {
            const std::optional<detail::stream_id> id = detail::parse_id(e.id);
            std::exception_ptr error;
            if (user) {
                try {
                    user(e);  // it may move what it wants out of the entry
                } catch (...) {
                    error = std::current_exception();  // counted by the pool, after the books
                }
            }
            ledger_.completed(id, std::move(e));
            if (error) {
                std::rethrow_exception(error);
            }
        };
        pool.on_failure = [this, user = options_.pool.on_failure](failure<stream_entry>&& f) {
            ledger_.failed(f);
            if (user) {
                user(std::move(f));
            }
        };
        pool_.emplace(std::move(handler), std::move(pool));
        thread_ = std::jthread([this](const std::stop_token& st) { read_loop(st); });
    }

    stream_consumer(const stream_consumer&) = delete;
    stream_consumer& operator=(const stream_consumer&) = delete;
    stream_consumer(stream_consumer&&) = delete;
    stream_consumer& operator=(stream_consumer&&) = delete;

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
    /// Throws: `std::bad_alloc` out of memory (the pool's shutdown, the last acknowledgements);
    /// what it did not acknowledge stays pending in Redis, and a later call returns at once.
    /// Blocks: up to about `block + grace + stuck_grace` (+ one reconnection attempt).
    consumer_stop_report stop(std::chrono::nanoseconds grace) {
        consumer_stop_report report;
        if (!thread_.joinable()) {
            return report;
        }
        thread_.request_stop();
        ledger_.wake();
        thread_.join();

        const shutdown_report<stream_entry> pool_report = pool_->shutdown(grace);
        report.drained = pool_report.drained;
        report.stuck_workers = pool_report.stuck_workers;
        // The handed-back entries (and cancelled ones) stay held: pending in Redis. One last
        // flush of everything owed, reconnecting once if the connection is down.
        // Reads sent ahead: what they delivered stays pending here (held, not run).
        while (!replies_.empty() && link_.up()) {
            const owed_reply next = replies_.front();
            replies_.pop_front();
            if (next == owed_reply::ack) {
                (void)settle(acks_.receive_acks(link_.get()));
                continue;
            }
            const detail::read_reply reply = reader_.take(link_.get());
            if (check_failure(reply.status, reply.error)) {
                detail::reader::parse(reply, batch_, spares_);
                std::vector<std::string> ids;
                for (const stream_entry& e : batch_.entries) {
                    ids.push_back(e.id);
                }
                (void)ledger_.hold(std::move(ids));
            }
        }
        drop_replies();
        if (!link_.up()) {
            (void)link_.connect();
        }
        if (link_.up()) {
            absorb_completions();
            settle(acks_.write_dead(link_.get(), std::chrono::steady_clock::time_point::max()));
            if (link_.up() && acks_.acks_due() && acks_.send_acks(link_.get())) {
                settle(acks_.receive_acks(link_.get()));
            }
        }
        absorb_completions();
        report.unacknowledged = acks_.owed();
        const std::size_t held = ledger_.held();
        report.left_pending = held > report.unacknowledged ? held - report.unacknowledged : 0;
        // Nothing is held here any more: what is left is pending in Redis.
        ledger_.clear();
        acks_.clear();
        recovery_.clear();
        refused_.clear();
        return report;
    }

    /// The consumer's counters and the pool's statistics. Thread safety: any thread.
    [[nodiscard]] consumer_stats stats() const {
        consumer_stats s;
        // Statistics only: relaxed loads, no ordering needed.
        s.read = read_.load(std::memory_order_relaxed);
        s.claimed = claimed_.load(std::memory_order_relaxed);
        s.acknowledged = acknowledged_.load(std::memory_order_relaxed);
        s.dead_lettered = dead_lettered_.load(std::memory_order_relaxed);
        s.dead_letter_failures = dead_letter_failures_.load(std::memory_order_relaxed);
        s.reconnects = reconnects_.load(std::memory_order_relaxed);
        s.redis_errors = redis_errors_.load(std::memory_order_relaxed);
        s.in_flight = ledger_.held();
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
    using clock = std::chrono::steady_clock;

    // --- the reader thread (and stop(), once the reader is joined) ----------------------------

    void read_loop(const std::stop_token& st) {
        while (!st.stop_requested()) {
            try {
                if (link_.up()) {
                    turn(st);
                } else {
                    reconnect(st);
                }
            } catch (const std::bad_alloc&) {
                out_of_memory();
            }
        }
    }

    // Waits out the backoff, then connects again.
    void reconnect(const std::stop_token& st) {
        if (link_.notice_broken()) {
            emit({consumer_event_kind::disconnected, 0, link_.why()});
        }
        if (!ledger_.sleep(st, link_.backoff())) {
            return;  // stop requested
        }
        drop_replies();
        if (link_.connect().status == detail::reply_class::ok) {
            // relaxed: statistics only
            reconnects_.store(link_.reconnects(), std::memory_order_relaxed);
            emit(
                {consumer_event_kind::connected, static_cast<std::size_t>(link_.reconnects()), {}});
            // A reply lost with the old connection may have delivered entries to us.
            recovery_.rescan_own();
        }
    }

    // An allocation failed on the reader thread. Where the step stopped is unknown (a command
    // may be sent and its reply not taken, entries read and not held yet), so it ends like a
    // broken connection: the replies owed are forgotten, the acknowledgements in them owed
    // again, and the own-list scan after reconnecting takes up what was read and not held (the
    // steps that hold ids release them when cut short). Allocates nothing ("out of memory" fits
    // a string's own buffer).
    void out_of_memory() noexcept {
        if (link_.fail("out of memory")) {
            emit({consumer_event_kind::disconnected, 0, link_.why()});
        }
    }

    // One step of work: what is owed first, then recovery, then new entries.
    void turn(const std::stop_token& st) {
        absorb_completions();
        if (!replies_.empty()) {
            collect_read(st);  // replies come before any other command's
            return;
        }
        const clock::time_point now = clock::now();
        if (acks_.dead_due(now) && !settle(acks_.write_dead(link_.get(), now))) {
            return;
        }
        if (recovery_.tick_due(now)) {
            recovery_.start_tick(now);
            if (!check(recovery_.refresh(link_.get(), ledger_.held_ids()))) {
                return;
            }
        }
        if (!refused_.empty() &&
            !refused_.resubmit([this](std::vector<stream_entry>& again) { submit(again); })) {
            // The pool still has no memory for them: send what is owed, else try again soon.
            // After the dead letters and the refresh (held entries keep their idle time low, so
            // no other consumer claims them), before the entry running alone is let go (it may
            // be one of these).
            if (acks_.acks_due()) {
                send_acks();
            } else {
                (void)ledger_.wait(st, std::chrono::milliseconds(1));
            }
            return;
        }
        if (alone_ && (!ledger_.holds(*alone_) ||
                       (ledger_.in_pool() == 0 && !acks_.acks_due() && !acks_.dead_due(now)))) {
            // The entry that ran alone is settled (acknowledged, dead-lettered), or its dead
            // letter was refused and waits for a retry: others may start again.
            alone_.reset();
        }
        if (recovery_.parked() || alone_) {
            // An entry runs alone, or waits for the pool to empty to do so: nothing else starts
            // until it is settled, so that a crash meanwhile is charged to it alone.
            if (!alone_ && ledger_.in_pool() == 0) {
                run_alone();
            } else {
                wait_for_completions(st, now);
            }
            return;
        }
        const std::size_t room = free_room();
        if (room == 0) {
            wait_for_completions(st, now);
        } else if (recovery_.own_due()) {
            take_up(recovery_.scan_own(link_.get(), room), false);
        } else if (recovery_.claim_due()) {
            take_up(recovery_.claim(link_.get(), room), true);
        } else {
            read_new(st, room);
        }
    }

    // Sends the acknowledgements owed, or (if none) waits for a completion, at most until the
    // claim timer is due and at most `block`.
    void wait_for_completions(const std::stop_token& st, clock::time_point now) {
        if (acks_.acks_due()) {
            send_acks();
            return;
        }
        const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::min(recovery_.next_tick(), now + options_.block) - now);
        (void)ledger_.wait(st, std::max(until, std::chrono::milliseconds(1)));
    }

    // Reads new entries, the acknowledgements owed riding in the same round trip.
    void read_new(const std::stop_token& st, std::size_t room) {
        if (send_read(room, ledger_.held())) {
            collect_read(st);
        }
    }

    // Sends the acknowledgements owed and a read of up to `room` entries, pipelined; `held`
    // entries are (or are about to be) held.
    bool send_read(std::size_t room, std::size_t held) {
        detail::connection& c = link_.get();
        if (acks_.acks_due()) {
            if (!acks_.send_acks(c)) {
                return check_failure(detail::reply_class::broken, c.error());
            }
            replies_.push_back(owed_reply::ack);
        }
        // Held entries will want acknowledging soon: do not sit in a long read meanwhile.
        const auto wait = held > 0 ? std::min(options_.block, options_.ack_delay) : options_.block;
        if (!reader_.send(c, std::min(room, options_.batch), wait)) {
            return check_failure(detail::reply_class::broken, c.error());
        }
        replies_.push_back(owed_reply::read);
        return true;
    }

    // Takes the replies up to the oldest read's. When that read brought entries and nothing else
    // is due, more reads are sent before these are parsed and submitted (up to `read_depth`
    // outstanding): the server prepares the next batches while this one goes to the pool.
    void collect_read(const std::stop_token& st) {
        detail::connection& c = link_.get();
        while (replies_.front() == owed_reply::ack) {
            replies_.pop_front();
            if (!settle(acks_.receive_acks(c))) {
                drop_replies();
                return;
            }
        }
        replies_.pop_front();
        const detail::read_reply reply = reader_.take(c);
        if (!check_failure(reply.status, reply.error)) {
            if (reply.status == detail::reply_class::error) {
                (void)ledger_.sleep(st, options_.block);  // the group deleted? do not spin
            } else {
                drop_replies();
            }
            return;
        }
        const std::size_t n = detail::reader::count(reply);
        if (n > 0 && may_read_ahead()) {
            absorb_completions();
            while (reader_.outstanding() < read_depth) {
                const std::size_t held = ledger_.held() + n + reader_.asked();
                if (held >= max_in_flight_ || !send_read(max_in_flight_ - held, held)) {
                    break;
                }
            }
        }
        detail::reader::parse(reply, batch_, spares_);
        read_.fetch_add(batch_.entries.size(), std::memory_order_relaxed);  // statistics only
        // Delivered without a body (deleted meanwhile): nothing to run, only to acknowledge.
        const std::vector<std::string> gone = ledger_.hold(std::move(batch_.gone));
        std::size_t owed = 0;
        try {
            for (; owed < gone.size(); ++owed) {
                // held: it parsed
                acks_.owe_ack(detail::parse_id(gone[owed]).value_or(detail::stream_id{}));
            }
        } catch (const std::bad_alloc&) {
            ledger_.release(std::span(gone).subspan(owed));  // the scan takes them up again
            throw;
        }
        start(batch_.entries);
    }

    // Forgets the replies still owed on a connection that is gone: what they answered is owed
    // again (acknowledgements), or pending here for the own-list scan (reads).
    void drop_replies() {
        replies_.clear();
        reader_.abandon();
        acks_.abandon();
    }

    // Whether nothing but reading is due, so that a read may be sent ahead.
    bool may_read_ahead() const {
        const clock::time_point now = clock::now();
        return !alone_ && !recovery_.parked() && !recovery_.own_due() && !recovery_.claim_due() &&
               !recovery_.tick_due(now) && !acks_.dead_due(now);
    }

    void send_acks() {
        if (acks_.send_acks(link_.get())) {
            (void)settle(acks_.receive_acks(link_.get()));
        } else {
            (void)check_failure(detail::reply_class::broken, link_.get().error());
        }
    }

    // Hands entries to the pool, unless one is already held here (claimed or re-read while it
    // runs here). Leaves `entries` empty, its capacity kept for the next batch.
    void start(std::vector<stream_entry>& entries) {
        ids_.clear();
        std::size_t kept = 0;
        for (std::size_t i = 0; i < entries.size(); ++i) {
            // Redis ids always parse; one that did not is left pending.
            if (const std::optional<detail::stream_id> id = detail::parse_id(entries[i].id)) {
                ids_.push_back(*id);
                if (kept != i) {
                    entries[kept] = std::move(entries[i]);
                }
                ++kept;
            }
        }
        entries.resize(kept);
        if (ledger_.hold(ids_, taken_) != entries.size()) {
            kept = 0;
            for (std::size_t i = 0; i < entries.size(); ++i) {
                if (taken_[i]) {
                    if (kept != i) {
                        entries[kept] = std::move(entries[i]);
                    }
                    ++kept;
                }
            }
            entries.resize(kept);
        }
        submit(entries);
        entries.clear();
    }

    // Submits entries the ledger holds already.
    void submit(std::vector<stream_entry>& entries) {
        ledger_.entered_pool(entries.size());
        for (stream_entry& e : entries) {
            if (pool_->submit(std::move(e)) != submit_status::accepted) {
                // Only when a pool with lanes or a rate limit has no memory for it (not at
                // shutdown: the reader is joined first; not from a pool thread). Untouched and
                // held, it waits in refused_ for the next turn, or, were refused_ full (it has
                // room for every held entry), is released for the own-list scan to take up.
                ledger_.left_pool(1);
                // NOLINTNEXTLINE(bugprone-use-after-move)
                if (!refused_.keep(e)) {
                    // NOLINTNEXTLINE(bugprone-use-after-move)
                    ledger_.release(std::span<const std::string>(&e.id, 1));  // parses, no alloc
                    recovery_.rescan_own();
                }
            }
        }
    }

    // Takes up ids found pending on this consumer (own list) or claimed from others.
    void take_up(detail::candidates c, bool claimed) {
        if (!check(c)) {
            return;
        }
        std::vector<std::string> fresh = ledger_.hold(std::move(c.ids));
        if (fresh.empty()) {
            return;
        }
        if (claimed) {
            claimed_.fetch_add(fresh.size(), std::memory_order_relaxed);  // statistics only
            emit({consumer_event_kind::claimed, fresh.size(), {}});
        }
        detail::adoption a;
        try {
            a = recovery_.adopt(link_.get(), fresh, false);
            if (!check_failure(a.status, a.error)) {
                ledger_.release(fresh);  // still pending here: the next scan or claim finds them
                return;
            }
        } catch (const std::bad_alloc&) {
            ledger_.release(fresh);  // pending here: the scan after reconnecting finds them
            throw;
        }
        if (!claimed) {
            read_.fetch_add(a.run.size(), std::memory_order_relaxed);  // statistics only
        }
        settle_adoption(std::move(a));
    }

    // Runs the next parked entry, alone in the pool, counting its delivery first.
    void run_alone() {
        std::vector<std::string> id(1);  // allocated before the id leaves the parked queue
        id.front() = recovery_.unpark();
        detail::adoption a;
        try {
            a = recovery_.adopt(link_.get(), id, true);
            if (!check_failure(a.status, a.error)) {
                if (a.status == detail::reply_class::error) {
                    ledger_.release(id);  // a definite error: leave it pending for a later scan
                } else {
                    recovery_.park(std::move(id));  // held still: try again after reconnecting
                }
                return;
            }
        } catch (const std::bad_alloc&) {
            ledger_.release(id);  // pending here: the scan after reconnecting finds it
            throw;
        }
        read_.fetch_add(a.run.size(), std::memory_order_relaxed);  // statistics only
        if (!a.run.empty()) {
            alone_ = detail::parse_id(a.run.front().id);
        }
        settle_adoption(std::move(a));
    }

    // Hands each adopted id on: released, submitted, owed a dead letter or parked. Out of memory
    // half-way, the ids not handed on yet are released (the scan after reconnecting finds them).
    void settle_adoption(detail::adoption&& a) {
        ledger_.release(a.dropped);
        submit(a.run);
        std::size_t owed = 0;
        try {
            for (; owed < a.dead.size(); ++owed) {
                acks_.owe(std::move(a.dead[owed]));
            }
            recovery_.park(std::move(a.alone));
        } catch (const std::bad_alloc&) {
            for (std::size_t i = owed; i < a.dead.size(); ++i) {
                ledger_.release(std::span<const std::string>(&a.dead[i].entry.id, 1));
            }
            ledger_.release(a.alone);
            throw;
        }
    }

    void absorb_completions() {
        ledger_.take(done_);
        if (!done_.retake.empty()) {
            // Failed, but their dead letters could not be booked (out of memory on a pool
            // thread): pending here, they are taken up again by the own-list scan.
            ledger_.release(done_.retake);
            done_.retake.clear();
            recovery_.rescan_own();
        }
        acks_.owe(done_);
        // Finished entries become the next batch's (their memory stays on this thread); big or
        // surplus ones are freed here, where they were allocated.
        for (stream_entry& e : done_.spent) {
            if (spares_.size() < max_in_flight_ && small(e)) {
                spares_.push_back(std::move(e));
            }
        }
        done_.spent.clear();
    }

    // Whether an entry's memory is worth keeping for reuse (a few fields of short values).
    static bool small(const stream_entry& e) noexcept {
        constexpr std::size_t most_fields = 16;
        constexpr std::size_t most_bytes = 4096;
        if (e.fields.capacity() > most_fields) {
            return false;
        }
        std::size_t bytes = e.id.capacity();
        for (const auto& [field, value] : e.fields) {
            bytes += field.capacity() + value.capacity();
        }
        return bytes <= most_bytes;
    }

    std::size_t free_room() const {
        const std::size_t held = ledger_.held();
        return held >= max_in_flight_ ? 0 : max_in_flight_ - held;
    }

    // Books what sending acknowledgements or dead letters achieved; false if the link failed.
    bool settle(const detail::settle_result& r) {
        ledger_.release(r.settled);
        acknowledged_.fetch_add(r.acknowledged, std::memory_order_relaxed);  // statistics only
        if (r.dead_lettered > 0) {
            dead_lettered_.fetch_add(r.dead_lettered, std::memory_order_relaxed);  // statistics
            emit({consumer_event_kind::dead_lettered, r.dead_lettered, {}});
        }
        if (r.dead_failed > 0) {
            dead_letter_failures_.fetch_add(r.dead_failed, std::memory_order_relaxed);  // stats
            redis_errors_.fetch_add(r.dead_failed, std::memory_order_relaxed);  // statistics only
            emit({consumer_event_kind::dead_letter_failed, r.dead_failed, r.dead_error});
        }
        return check_failure(r.status, r.error);
    }

    bool check(const detail::candidates& c) { return check_failure(c.status, c.error); }

    // Acts on a command's outcome: a definite error is reported, a broken connection or a
    // transient reply ends the connection (an outage). Returns true only for `ok`.
    bool check_failure(detail::reply_class status, const std::string& error) {
        switch (status) {
        case detail::reply_class::ok:
            return true;
        case detail::reply_class::error:
            redis_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            emit({consumer_event_kind::redis_error, 1, error});
            return false;
        case detail::reply_class::transient:
            redis_errors_.fetch_add(1, std::memory_order_relaxed);  // statistics only
            break;
        case detail::reply_class::broken:
            break;
        }
        if (link_.fail(error)) {
            emit({consumer_event_kind::disconnected, 0, link_.why()});
        }
        return false;
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

    // Shared with the pool's threads (its own mutex).
    detail::ledger ledger_;

    // Reader-only (and stop(), after the reader is joined).
    detail::link link_;
    detail::reader reader_;
    detail::acknowledger acks_;
    detail::recovery recovery_;
    detail::ledger::completions done_;  // scratch for absorb_completions
    // Replies owed on the connection, in order: XACKs and reads sent together (pipelined).
    enum class owed_reply { ack, read };
    std::deque<owed_reply> replies_;
    static constexpr std::size_t read_depth = 2;  // reads outstanding while a backlog lasts
    // Scratch for one batch, kept between batches: allocating these per batch triggered glibc's
    // fastbin consolidation each time (they are over 1 KiB).
    detail::read_result batch_;
    std::vector<stream_entry> spares_;  // finished entries whose memory the next batch reuses
    std::vector<detail::stream_id> ids_;
    std::vector<bool> taken_;
    // Held entries the pool refused (out of memory), submitted again next turn.
    detail::refusals refused_{max_in_flight_};
    // The entry running alone, until settled: nothing else starts meanwhile.
    std::optional<detail::stream_id> alone_;

    // Statistics: relaxed counters, written by the reader, read by stats() from any thread.
    std::atomic<std::uint64_t> read_{0};
    std::atomic<std::uint64_t> claimed_{0};
    std::atomic<std::uint64_t> acknowledged_{0};
    std::atomic<std::uint64_t> dead_lettered_{0};
    std::atomic<std::uint64_t> dead_letter_failures_{0};
    std::atomic<std::uint64_t> reconnects_{0};
    std::atomic<std::uint64_t> redis_errors_{0};

    // Destroyed first: the pool's callbacks use the members above.
    std::optional<dispatcher<stream_entry>> pool_;
    std::jthread thread_;
};

}  // namespace workerpool::redis
