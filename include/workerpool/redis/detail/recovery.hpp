#pragma once

/// @file
/// Not API: entries that were delivered before and not acknowledged: this consumer name's own
/// pending list (after a restart or a lost reply), entries claimed from consumers that went
/// away, and the delivery count that decides whether each runs again, runs alone, or goes to the
/// dead-letter stream.

#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/connection.hpp>
#include <workerpool/redis/detail/ledger.hpp>
#include <workerpool/redis/detail/stream_id.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace workerpool::redis::detail {

/// Decides, in one atomic step per batch, what happens to ids pending on this consumer that it
/// is about to take up again. For each id still pending on it: gone from the stream →
/// acknowledged (nothing to run); delivered `max` times already → returned for the dead-letter
/// stream, not counted again; its next delivery would be its last and the mode is 'bulk' → left
/// as is, to be run alone later; otherwise counted as delivered once more (XCLAIM to itself) and
/// returned to run. KEYS: stream. ARGV: group, consumer, max deliveries (0: none), 'bulk' or
/// 'single', then the ids. Returns per id {id, code[, deliveries[, fields]]}, codes as in
/// `adoption`.
inline constexpr std::string_view adopt_script =
    "local out = {} local max = tonumber(ARGV[3]) "
    "for i = 5, #ARGV do local id = ARGV[i] "
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) "
    "if #p == 0 then out[#out + 1] = {id, 0} else "
    "local n = p[1][4] local body = redis.call('XRANGE', KEYS[1], id, id) "
    "if #body == 0 then redis.call('XACK', KEYS[1], ARGV[1], id) out[#out + 1] = {id, 1} "
    "elseif max > 0 and n >= max then out[#out + 1] = {id, 2, n, body[1][2]} "
    "elseif max > 0 and n + 1 >= max and ARGV[4] == 'bulk' then out[#out + 1] = {id, 3, n} "
    "else redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id) "
    "out[#out + 1] = {id, 4, n + 1, body[1][2]} end end end return out";

/// What taking up pending ids again decided.
struct adoption {
    reply_class status = reply_class::ok;  ///< `ok`, or why nothing was decided.
    std::string error;                     ///< The error reply's text, if any.
    std::vector<stream_entry> run;         ///< Counted as delivered once more: run them (code 4).
    std::vector<dead_letter> dead;         ///< Delivered too often: dead-letter them (code 2).
    std::vector<std::string> alone;        ///< Last delivery due: run each alone (code 3).
    std::vector<std::string> dropped;      ///< Not ours any more (0), or gone and acked (1).
};

/// Ids found pending: on this consumer (`own`) or claimed from others.
struct candidates {
    reply_class status = reply_class::ok;  ///< `ok`, or why there are none.
    std::string error;                     ///< The error reply's text, if any.
    std::vector<std::string> ids;          ///< Pending on this consumer now.
};

/// Finds entries delivered before and not acknowledged, and hands them back to run (or to
/// dead-letter). Owns the scan of the own pending list, the XAUTOCLAIM cursor and its timer, and
/// the queue of entries waiting to run alone.
///
/// Thread safety: one thread (the reader).
class recovery {
public:
    /// Keeps what it needs of `o`; the first own-list scan is due at once.
    explicit recovery(const consumer_options& o)
        : stream_(o.stream), group_(o.group), consumer_(o.consumer), batch_(o.batch),
          claim_idle_(o.claim_idle), idle_text_(std::to_string(o.claim_idle.count())),
          max_text_(std::to_string(o.max_deliveries)),
          next_claim_(std::chrono::steady_clock::now()) {}

    // --- the own pending list ----------------------------------------------------------------

    /// Schedules a scan of the own pending list from its start (at start-up and after each
    /// reconnection: a reply lost with the old connection may have delivered entries here).
    void rescan_own() {
        scanning_own_ = true;
        own_cursor_ = "-";
    }

    /// Whether an own-list scan is under way.
    [[nodiscard]] bool own_due() const noexcept { return scanning_own_; }

    /// The next page (at most `room` ids) of the own pending list.
    candidates scan_own(connection& c, std::size_t room) {
        const std::size_t page = std::min(room, batch_);
        candidates out;
        const reply_ptr r = c.command(
            {"XPENDING", stream_, group_, own_cursor_, "+", std::to_string(page), consumer_});
        if (!take_status(r, c, out)) {
            return out;
        }
        for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
            const redisReply* p = at(r, i);
            if (p->type == REDIS_REPLY_ARRAY && p->elements >= 1) {
                out.ids.push_back(reply_text(at(p, 0)));
            }
        }
        if (out.ids.size() < page) {
            scanning_own_ = false;  // the end of the list
        } else {
            own_cursor_ = "(" + out.ids.back();
        }
        return out;
    }

    // --- claiming from others ----------------------------------------------------------------

    /// Whether the claim timer fired: time to refresh the held entries and start a claim scan.
    [[nodiscard]] bool tick_due(std::chrono::steady_clock::time_point now) const noexcept {
        return claim_idle_.count() > 0 && now >= next_claim_;
    }

    /// Restarts the timer and starts a claim scan (continuing one still under way).
    void start_tick(std::chrono::steady_clock::time_point now) {
        next_claim_ = now + claim_idle_ / 4;
        claiming_ = true;
    }

    /// When the claim timer fires next (the far future when claiming is off).
    [[nodiscard]] std::chrono::steady_clock::time_point next_tick() const noexcept {
        return claim_idle_.count() > 0 ? next_claim_ : std::chrono::steady_clock::time_point::max();
    }

    /// Whether a claim scan is under way (XAUTOCLAIM's cursor has not come back to the start).
    [[nodiscard]] bool claim_due() const noexcept { return claiming_; }

    /// Claims (without counting a delivery: JUSTID) up to `room` entries idle for `claim_idle`
    /// on any consumer, following XAUTOCLAIM's cursor.
    candidates claim(connection& c, std::size_t room) {
        candidates out;
        const reply_ptr r =
            c.command({"XAUTOCLAIM", stream_, group_, consumer_, idle_text_, claim_cursor_, "COUNT",
                       std::to_string(std::min(room, batch_)), "JUSTID"});
        if (!take_status(r, c, out)) {
            return out;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
            claiming_ = false;
            return out;
        }
        claim_cursor_ = reply_text(at(r, 0));
        if (claim_cursor_.empty() || claim_cursor_ == "0-0") {
            claim_cursor_ = "0-0";
            claiming_ = false;  // the whole pending list was scanned
        }
        const redisReply* ids = at(r, 1);
        for (std::size_t i = 0; ids->type == REDIS_REPLY_ARRAY && i < ids->elements; ++i) {
            out.ids.push_back(reply_text(at(ids, i)));
        }
        return out;
    }

    /// Resets the idle time of `held` (XCLAIM to itself, JUSTID: not a delivery), so that other
    /// consumers do not claim entries that only wait here.
    candidates refresh(connection& c, const std::vector<stream_id>& held) {
        candidates out;
        constexpr std::size_t chunk = 512;
        std::vector<std::string> text;
        for (std::size_t i = 0; i < held.size(); i += chunk) {
            const std::size_t end = std::min(held.size(), i + chunk);
            text.clear();
            for (std::size_t k = i; k < end; ++k) {
                text.push_back(to_string(held[k]));
            }
            std::vector<std::string_view> cmd{"XCLAIM", stream_, group_, consumer_, "0"};
            cmd.insert(cmd.end(), text.begin(), text.end());
            cmd.emplace_back("JUSTID");
            const reply_ptr r = c.append_views(cmd) ? c.reply() : nullptr;
            if (!take_status(r, c, out)) {
                return out;
            }
        }
        return out;
    }

    // --- deciding -------------------------------------------------------------------------

    /// Takes up `ids` (pending on this consumer, held by the caller): see `adopt_script`. With
    /// `alone`, the entry is run now even if this is its last allowed delivery.
    adoption adopt(connection& c, const std::vector<std::string>& ids, bool alone) {
        adoption out;
        std::vector<std::string_view> cmd{
            "EVAL", adopt_script, "1",       stream_,
            group_, consumer_,    max_text_, alone ? "single" : "bulk"};
        cmd.insert(cmd.end(), ids.begin(), ids.end());
        const reply_ptr r = c.append_views(cmd) ? c.reply() : nullptr;
        out.status = classify(r.get());
        if (out.status != reply_class::ok) {
            out.error = r == nullptr ? c.error() : reply_text(r.get());
            return out;
        }
        for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
            decide(at(r, i), out);
        }
        return out;
    }

    /// Queues ids whose last delivery must run alone. All or nothing: out of memory, it throws
    /// with `ids` as they were and nothing queued.
    void park(std::vector<std::string>&& ids) {
        const std::size_t before = parked_.size();
        try {
            for (std::string& id : ids) {
                parked_.push_back(std::move(id));
            }
        } catch (const std::bad_alloc&) {
            for (std::size_t i = before; i < parked_.size(); ++i) {
                ids[i - before] = std::move(parked_[i]);
            }
            parked_.erase(parked_.begin() + static_cast<std::ptrdiff_t>(before), parked_.end());
            throw;
        }
    }

    /// Whether entries wait to run alone.
    [[nodiscard]] bool parked() const noexcept { return !parked_.empty(); }

    /// The next entry to run alone.
    std::string unpark() {
        std::string id = std::move(parked_.front());
        parked_.pop_front();
        return id;
    }

    /// Forgets the parked entries (at `stop`: they stay pending in Redis).
    void clear() { parked_.clear(); }

private:
    // Copies a reply's class and error text into `out`; true if it is an answer.
    static bool take_status(const reply_ptr& r, connection& c, candidates& out) {
        out.status = classify(r.get());
        if (out.status != reply_class::ok) {
            out.error = r == nullptr ? c.error() : reply_text(r.get());
            return false;
        }
        return true;
    }

    void decide(const redisReply* d, adoption& out) const {
        if (d->type != REDIS_REPLY_ARRAY || d->elements < 2 ||
            at(d, 1)->type != REDIS_REPLY_INTEGER) {
            return;
        }
        std::string id = reply_text(at(d, 0));
        const long long code = at(d, 1)->integer;
        if (code == 3) {
            out.alone.push_back(std::move(id));
            return;
        }
        if ((code != 2 && code != 4) || d->elements < 4) {
            out.dropped.push_back(std::move(id));
            return;
        }
        stream_entry e;
        const redisReply* body = at(d, 3);
        e.id = std::move(id);
        for (std::size_t i = 0; body->type == REDIS_REPLY_ARRAY && i + 1 < body->elements; i += 2) {
            e.fields.emplace_back(reply_text(at(body, i)), reply_text(at(body, i + 1)));
        }
        if (code == 4) {
            out.run.push_back(std::move(e));
            return;
        }
        const std::string times = std::to_string(at(d, 2)->integer);
        out.dead.push_back({std::move(e), "too_many_deliveries", 0,
                            "delivered " + times + " times without being acknowledged"});
    }

    const std::string stream_;
    const std::string group_;
    const std::string consumer_;
    const std::size_t batch_;
    const std::chrono::milliseconds claim_idle_;
    const std::string idle_text_;  // claim_idle in ms, as XAUTOCLAIM wants it
    const std::string max_text_;   // max_deliveries, as the script wants it
    bool scanning_own_ = true;
    std::string own_cursor_ = "-";
    bool claiming_ = false;
    std::string claim_cursor_ = "0-0";
    std::chrono::steady_clock::time_point next_claim_;
    std::deque<std::string> parked_;  // held; each to run alone when the pool is empty
};

}  // namespace workerpool::redis::detail
