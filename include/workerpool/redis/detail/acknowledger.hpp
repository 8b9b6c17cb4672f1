#pragma once

/// @file
/// Not API: what a consumer owes Redis for entries that finished (acknowledgements and dead
/// letters), sent until Redis gives a definite answer.

#include <workerpool/redis/consumer_options.hpp>
#include <workerpool/redis/detail/connection.hpp>
#include <workerpool/redis/detail/ledger.hpp>
#include <workerpool/redis/detail/stream_id.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <deque>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace workerpool::redis::detail {

/// Runs inside MULTI/EXEC right after the XADD of a dead letter: keeps it and acknowledges the
/// entry only if the XADD wrote it (the dead stream's last entry is it) and the entry is still
/// pending in the group; otherwise takes the dead letter back. So an entry is acknowledged only
/// once its dead letter exists, two consumers failing one entry write one dead letter, and a
/// retry after a lost reply writes none. The XADD is a command of its own, not a call from Lua,
/// because Lua cannot pass more than about 8000 arguments (`unpack`) and an entry may have more
/// fields than that. KEYS: stream, dead-letter stream. ARGV: group, id.
inline constexpr std::string_view dead_letter_check_script =
    "local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1] "
    "if last == nil or last[2][1] ~= 'dl:id' or last[2][2] ~= ARGV[2] then "
    "return redis.error_reply('ERR workerpool: the dead letter was not written') end "
    "local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) "
    "if p.err ~= nil or #p == 0 then redis.call('XDEL', KEYS[2], last[1]) return 0 end "
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) return 1";

/// What sending acknowledgements or dead letters achieved.
struct settle_result {
    reply_class status = reply_class::ok;  ///< `ok`, or the failure that stopped the sending.
    std::string error;                     ///< Its text (or a definite error's).
    /// Ids done with: stop holding them. Valid until the acknowledger's next call.
    std::span<const stream_id> settled;
    std::size_t acknowledged = 0;   ///< Entries acknowledged (XACK counted them).
    std::size_t dead_lettered = 0;  ///< Dead letters written (and entries acknowledged).
    std::size_t dead_failed = 0;    ///< Dead letters refused; their entries stay owed.
    std::string dead_error;         ///< Why the first refused one was refused.
};

/// Owes acknowledgements and dead letters until Redis answers them definitely: a broken
/// connection or a transient reply keeps them owed (sent again after reconnecting); a dead
/// letter Redis refuses stays owed and is tried again after a backoff.
///
/// Thread safety: one thread (the reader, then `stop` after the reader is joined).
class acknowledger {
public:
    /// Keeps the names it needs from `o`.
    acknowledger(const consumer_options& o, std::string dead_letter_stream)
        : stream_(o.stream), group_(o.group), consumer_(o.consumer),
          dead_stream_(std::move(dead_letter_stream)), ack_prefix_(ack_prefix(o.stream, o.group)),
          retry_min_(o.reconnect_min), retry_max_(o.reconnect_max), retry_(o.reconnect_min) {}

    /// Takes over what the pool reported. Out of memory half-way, what it did not take over
    /// stays in `c` (and nothing is owed twice).
    void owe(ledger::completions& c) {
        acks_.insert(acks_.end(), c.acks.begin(), c.acks.end());
        c.acks.clear();
        auto taken = c.dead.begin();
        try {
            for (; taken != c.dead.end(); ++taken) {
                owe(std::move(*taken));
            }
        } catch (const std::bad_alloc&) {
            c.dead.erase(c.dead.begin(), taken);
            throw;
        }
        c.dead.clear();
    }

    /// Owes one dead letter (due at once). Out of memory, it throws with `d` untouched.
    void owe(dead_letter&& d) {
        dead_.emplace_back();  // allocates first: `d` is moved only once there is room
        dead_.back().letter = std::move(d);
    }

    /// Whether acknowledgements are owed.
    [[nodiscard]] bool acks_due() const noexcept { return !acks_.empty(); }

    /// Whether a dead letter is due at `now`.
    [[nodiscard]] bool dead_due(std::chrono::steady_clock::time_point now) const noexcept {
        return std::any_of(dead_.begin(), dead_.end(),
                           [&](const owed_dead& d) { return d.not_before <= now; });
    }

    /// Whether an XACK was sent and its answer not read yet.
    [[nodiscard]] bool awaiting() const noexcept { return !sent_.empty(); }

    /// Owes again the XACKs whose answers will not come (their connection is gone).
    void abandon() {
        while (!sent_.empty()) {
            acks_.insert(acks_.end(), sent_.front().begin(), sent_.front().end());
            recycle_front();
        }
    }

    /// Entries owed something (acknowledgement or dead letter).
    [[nodiscard]] std::size_t owed() const noexcept {
        std::size_t n = acks_.size() + dead_.size();
        for (const std::vector<stream_id>& batch : sent_) {
            n += batch.size();
        }
        return n;
    }

    /// Owes an acknowledgement for `id` (an entry with nothing to run).
    void owe_ack(stream_id id) { acks_.push_back(id); }

    /// Queues one XACK with every id owed (pipelining; several may be outstanding); read the
    /// answers in order with `receive_acks`.
    bool send_acks(connection& c) {
        // The ids move to a batch of their own; acks_ takes a spare buffer (no allocation).
        sent_.emplace_back();
        if (!spare_.empty()) {
            sent_.back().swap(spare_.back());
            spare_.pop_back();
        }
        sent_.back().swap(acks_);
        acks_.clear();
        const std::vector<stream_id>& batch = sent_.back();
        // Formatted here, not by hiredis (which formats each argument with a printf-like
        // routine): "*<n>\r\n", then XACK, stream and group, then "$<len>\r\n<id>\r\n" each.
        text_.clear();
        append_number(text_, '*', batch.size() + 3);
        text_ += ack_prefix_;
        std::array<char, max_id_text> id{};
        for (const stream_id one : batch) {
            const char* const end = format_id(one, id.data());
            const auto len = static_cast<std::size_t>(end - id.data());
            append_number(text_, '$', len);
            text_.append(id.data(), len);
            text_ += "\r\n";
        }
        return c.append_formatted(text_);
    }

    /// Reads the answer to the oldest XACK sent.
    settle_result receive_acks(connection& c) {
        settle_result out;
        const reply_ptr r = c.reply();
        out.status = classify(r.get());
        if (out.status == reply_class::broken || out.status == reply_class::transient) {
            out.error = r == nullptr ? c.error() : reply_text(r.get());
            abandon();  // owed still, this batch and any sent after it
            return out;
        }
        if (out.status == reply_class::error) {
            out.error = reply_text(r.get());  // no such group or stream: they cannot be acked
        } else {
            out.acknowledged = sent_.front().size();
        }
        settled_.swap(sent_.front());  // both keep their capacity: no allocation per batch
        recycle_front();
        out.settled = settled_;
        return out;
    }

    /// Writes every dead letter due at `now`, each in its own MULTI/EXEC (pipelined).
    settle_result write_dead(connection& c, std::chrono::steady_clock::time_point now) {
        settle_result out;
        settled_.clear();
        std::vector<std::size_t> sent;
        for (std::size_t i = 0; i < dead_.size() && sent.size() < max_per_write; ++i) {
            if (dead_[i].not_before <= now && append_transaction(c, dead_[i].letter)) {
                sent.push_back(i);
            }
        }
        std::vector<bool> done(dead_.size(), false);
        bool refused = false;
        for (const std::size_t i : sent) {
            const transaction_outcome t = read_transaction(c);
            if (t.status == reply_class::broken || t.status == reply_class::transient) {
                out.status = t.status;
                out.error = t.error;
                break;  // the rest stay owed, due at once after reconnecting
            }
            if (t.status == reply_class::error) {
                refused = true;
                ++out.dead_failed;
                if (out.dead_error.empty()) {
                    out.dead_error = t.error;
                }
                dead_[i].not_before = now + retry_;
                continue;
            }
            out.dead_lettered += t.written ? 1U : 0U;
            if (const std::optional<stream_id> id = parse_id(dead_[i].letter.entry.id)) {
                settled_.push_back(*id);
            }
            done[i] = true;
        }
        if (out.status != reply_class::ok) {
            c.poison(out.error);  // replies of the unread transactions would come next
        }
        std::size_t kept = 0;
        for (std::size_t i = 0; i < dead_.size(); ++i) {
            if (!done[i]) {
                if (kept != i) {
                    dead_[kept] = std::move(dead_[i]);
                }
                ++kept;
            }
        }
        dead_.resize(kept);
        retry_ = refused ? std::min(retry_ * 2, retry_max_) : retry_min_;
        out.settled = settled_;
        return out;
    }

    /// Forgets everything owed (at the end of `stop`: it stays pending in Redis).
    void clear() {
        acks_.clear();
        while (!sent_.empty()) {
            recycle_front();
        }
        dead_.clear();
    }

private:
    struct owed_dead {
        dead_letter letter;
        std::chrono::steady_clock::time_point not_before;  // retry after a refusal
    };

    struct transaction_outcome {
        reply_class status = reply_class::ok;
        std::string error;
        bool written = false;  // false with ok: the entry was no longer pending
    };

    static constexpr std::size_t max_per_write = 64;  // bounds one flush's round trip

    // Appends "<tag><n>\r\n" (a RESP array or bulk string header).
    static void append_number(std::string& out, char tag, std::size_t n) {
        std::array<char, 24> digits{};
        const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), n).ptr;
        out += tag;
        out.append(digits.data(), static_cast<std::size_t>(end - digits.data()));
        out += "\r\n";
    }

    // "$4\r\nXACK\r\n$<len>\r\n<stream>\r\n$<len>\r\n<group>\r\n": what every XACK starts with.
    static std::string ack_prefix(const std::string& stream, const std::string& group) {
        std::string out;
        for (const std::string_view arg :
             {std::string_view("XACK"), std::string_view(stream), std::string_view(group)}) {
            append_number(out, '$', arg.size());
            out.append(arg);
            out += "\r\n";
        }
        return out;
    }

    // Drops the oldest sent batch, keeping its buffer if there is memory to keep it.
    void recycle_front() noexcept {
        std::vector<stream_id> batch = std::move(sent_.front());
        sent_.pop_front();
        batch.clear();
        try {
            spare_.push_back(std::move(batch));
        } catch (const std::bad_alloc&) {
            // Out of memory: the buffer is freed instead of reused.
        }
    }

    bool append_transaction(connection& c, const dead_letter& d) {
        attempts_ = std::to_string(d.attempts);
        args_.assign({"XADD", dead_stream_, "*", "dl:id", d.entry.id, "dl:reason", d.reason,
                      "dl:attempts", attempts_, "dl:error", d.error, "dl:consumer", consumer_});
        for (const auto& [field, value] : d.entry.fields) {
            args_.emplace_back(field);
            args_.emplace_back(value);
        }
        return c.append_views({"MULTI"}) && c.append_views(args_) &&
               c.append_views({"EVAL", dead_letter_check_script, "2", stream_, dead_stream_, group_,
                               d.entry.id}) &&
               c.append_views({"EXEC"});
    }

    // Reads MULTI's, the two QUEUED and EXEC's replies of one transaction.
    static transaction_outcome read_transaction(connection& c) {
        transaction_outcome t;
        std::array<reply_ptr, 4> replies;
        for (reply_ptr& r : replies) {
            r = c.reply();
            if (r == nullptr) {
                t.status = reply_class::broken;
                t.error = c.error();
                return t;
            }
        }
        // A refusal while queueing (e.g. BUSY) is reported again by EXEC (EXECABORT): look at
        // the first error for its class. MULTI refused (the first) leaves the state unknown:
        // reconnect.
        for (std::size_t i = 0; i < 3; ++i) {
            const redisReply* q = replies.at(i).get();
            if (is_error(q)) {
                t.status = classify(q);
                t.error = reply_text(q);
                if (t.status == reply_class::error && i == 0) {
                    t.status = reply_class::transient;
                }
                return t;
            }
        }
        const redisReply* exec = replies[3].get();
        if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2) {
            t.status = exec->type == REDIS_REPLY_ERROR ? classify(exec) : reply_class::error;
            t.error = reply_text(exec);
            return t;
        }
        for (std::size_t i = 0; i < 2; ++i) {
            if (is_error(at(exec, i))) {
                t.status = classify(at(exec, i));
                t.error = reply_text(at(exec, i));
                return t;
            }
        }
        t.written = at(exec, 1)->type == REDIS_REPLY_INTEGER && at(exec, 1)->integer == 1;
        return t;
    }

    const std::string stream_;
    const std::string group_;
    const std::string consumer_;
    const std::string dead_stream_;
    const std::string ack_prefix_;  // see ack_prefix()
    const std::chrono::milliseconds retry_min_;
    const std::chrono::milliseconds retry_max_;
    std::chrono::milliseconds retry_;            // delay before retrying refused dead letters
    std::vector<stream_id> acks_;                // owed, not sent
    std::deque<std::vector<stream_id>> sent_;    // XACKs awaiting their replies, oldest first
    std::vector<std::vector<stream_id>> spare_;  // emptied batches, reused by send_acks
    std::vector<stream_id> settled_;      // what the last call settled (settle_result::settled)
    std::string text_;                    // scratch: the XACK command, formatted
    std::deque<owed_dead> dead_;          // owed dead letters, oldest first
    std::vector<std::string_view> args_;  // scratch for one command
    std::string attempts_;
};

}  // namespace workerpool::redis::detail
