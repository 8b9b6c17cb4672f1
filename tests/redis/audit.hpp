#pragma once

// Auditing a Redis test from Redis itself: for every entry of the stream, did it run, is it still
// pending in the group, or is it in the dead-letter stream, and how many times each.

#include <workerpool/redis/stream_consumer.hpp>

#include "redis/redis_util.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace workerpool::test {

/// Handler runs per entry id, recorded from handler threads (no assertions there).
/// Thread safety: any thread.
class run_record {
public:
    /// Counts one run of `id`.
    void ran(const std::string& id) {
        const std::lock_guard lock(mutex_);
        ++runs_[id];
    }

    /// Runs per id so far.
    [[nodiscard]] std::map<std::string, int> runs() const {
        const std::lock_guard lock(mutex_);
        return runs_;
    }

    /// Total runs so far.
    [[nodiscard]] std::size_t total() const {
        const std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [id, count] : runs_) {
            n += static_cast<std::size_t>(count);
        }
        return n;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::string, int> runs_;
};

/// What became of each entry of a stream.
struct audit_report {
    std::size_t entries = 0;            ///< Entries in the stream.
    std::size_t ran = 0;                ///< Ran at least once.
    std::size_t pending = 0;            ///< Still pending in the group.
    std::size_t dead = 0;               ///< In the dead-letter stream (once).
    std::size_t dead_twice = 0;         ///< In the dead-letter stream more than once.
    std::size_t duplicates = 0;         ///< Runs beyond the first, summed over entries.
    std::vector<std::string> lost;      ///< Neither ran, pending nor dead-lettered.
    std::set<std::string> pending_ids;  ///< Which are pending.
    std::map<std::string, std::string> dead_reasons;  ///< dl:id -> dl:reason.
};

/// Audits `stream` (group `group`, dead letters in `dead_stream`) against `runs`.
inline audit_report audit(redis_client& r, const std::string& stream, const std::string& group,
                          const std::string& dead_stream, const std::map<std::string, int>& runs) {
    audit_report a;
    redis::detail::reply_ptr p = r.run({"XPENDING", stream, group, "-", "+", "1000000"});
    for (std::size_t i = 0; p->type == REDIS_REPLY_ARRAY && i < p->elements; ++i) {
        a.pending_ids.insert(redis::detail::reply_text(p->element[i]->element[0]));
    }
    std::map<std::string, int> dead_count;
    for (const redis::stream_entry& d : r.range(dead_stream)) {
        if (const std::string* id = d.find("dl:id")) {
            ++dead_count[*id];
            const std::string* reason = d.find("dl:reason");
            a.dead_reasons[*id] = reason != nullptr ? *reason : "";
        }
    }
    for (const auto& [id, count] : runs) {
        a.duplicates += count > 1 ? static_cast<std::size_t>(count - 1) : 0U;
    }
    for (const redis::stream_entry& e : r.range(stream)) {
        ++a.entries;
        const auto run = runs.find(e.id);
        const bool ran = run != runs.end() && run->second > 0;
        const bool pending = a.pending_ids.count(e.id) == 1;
        const int dead = dead_count.count(e.id) == 1 ? dead_count[e.id] : 0;
        a.ran += ran ? 1U : 0U;
        a.pending += pending ? 1U : 0U;
        a.dead += dead == 1 ? 1U : 0U;
        a.dead_twice += dead > 1 ? 1U : 0U;
        if (!ran && !pending && dead == 0) {
            a.lost.push_back(e.id);
        }
    }
    return a;
}

/// Counts a consumer's events by kind and keeps every detail text (to check what they say, and
/// what they never say). Thread safety: any thread.
class event_log {
public:
    /// An `on_event` observer that records into this log (which must outlive the consumer).
    [[nodiscard]] std::function<void(const redis::consumer_event&)> observer() {
        return [this](const redis::consumer_event& e) {
            const std::lock_guard lock(mutex_);
            ++counts_[static_cast<std::size_t>(e.kind)];
            entries_[static_cast<std::size_t>(e.kind)] += e.count;
            if (!e.detail.empty()) {
                details_.emplace_back(e.detail);
            }
        };
    }

    /// Events of `kind` so far.
    [[nodiscard]] std::size_t count(redis::consumer_event_kind kind) const {
        const std::lock_guard lock(mutex_);
        return counts_[static_cast<std::size_t>(kind)];
    }

    /// The `count` fields of events of `kind`, summed.
    [[nodiscard]] std::size_t entries(redis::consumer_event_kind kind) const {
        const std::lock_guard lock(mutex_);
        return entries_[static_cast<std::size_t>(kind)];
    }

    /// Every detail text so far.
    [[nodiscard]] std::vector<std::string> details() const {
        const std::lock_guard lock(mutex_);
        return details_;
    }

    /// Whether some detail text contains `text`.
    [[nodiscard]] bool mentions(const std::string& text) const {
        const std::lock_guard lock(mutex_);
        for (const std::string& d : details_) {
            if (d.find(text) != std::string::npos) {
                return true;
            }
        }
        return false;
    }

private:
    static constexpr std::size_t kinds = 6;
    mutable std::mutex mutex_;
    std::array<std::size_t, kinds> counts_{};
    std::array<std::size_t, kinds> entries_{};
    std::vector<std::string> details_;
};

}  // namespace workerpool::test
