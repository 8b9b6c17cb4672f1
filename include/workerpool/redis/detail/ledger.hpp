#pragma once

/// @file
/// Not API: the ledger of what a `stream_consumer` holds, the one piece of state its pool threads
/// and its reader thread share.

#include <workerpool/redis/stream_entry.hpp>
#include <workerpool/status.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <stop_token>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace workerpool::redis::detail {

/// An entry to copy to the dead-letter stream, with why.
struct dead_letter {
    stream_entry entry;  ///< The entry, fields and all.
    std::string reason;  ///< `to_string(failure_reason)`, or "too_many_deliveries".
    unsigned attempts;   ///< Handler calls in this process (0: not run here).
    std::string error;   ///< The last exception's message, or why it was not run.
};

/// The text of an exception (empty for null; a fixed text for a non-standard one).
inline std::string what_of(const std::exception_ptr& e) {
    if (!e) {
        return {};
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "non-standard exception";
    }
}

/// What a `stream_consumer` holds: every id it read or claimed and has not settled (queued,
/// running, waiting to retry, waiting to be acknowledged or dead-lettered, or parked for a run on
/// its own), how many of them are in the pool, and the completions the pool reported since the
/// reader last took them.
///
/// Thread safety: every member, any thread; `mutex_` guards all state. Pool threads call
/// `completed` and `failed`; the reader thread calls the rest. The reader sleeps in `wait` and
/// is woken by a completion or a stop request.
class ledger {
public:
    /// Completions taken by the reader: ids to acknowledge, entries to dead-letter.
    struct completions {
        std::vector<std::string> acks;  ///< Handlers returned: acknowledge these.
        std::vector<dead_letter> dead;  ///< Failed for good: dead-letter these.
    };

    /// Reserves room for `n` ids without rehashing.
    explicit ledger(std::size_t n) { held_.reserve(n); }

    // --- pool threads ----------------------------------------------------------------------

    /// The handler of `id` returned: it is owed an acknowledgement.
    void completed(const std::string& id) {
        {
            const std::lock_guard lock(mutex_);
            --in_pool_;
            done_.acks.push_back(id);
        }
        cv_.notify_one();
    }

    /// `f` will not be processed: dead-letter it, unless shutdown cancelled it (then it stays
    /// pending in Redis for another consumer).
    void failed(const failure<stream_entry>& f) {
        {
            const std::lock_guard lock(mutex_);
            --in_pool_;
            if (f.reason != failure_reason::cancelled) {
                done_.dead.push_back(
                    {f.request, to_string(f.reason), f.attempts, what_of(f.error)});
            }
        }
        cv_.notify_one();
    }

    // --- the reader thread -----------------------------------------------------------------

    /// Holds each of `ids` not held yet; returns those it took (the rest are held already: read
    /// twice, or claimed while running here).
    std::vector<std::string> hold(std::vector<std::string> ids) {
        const std::lock_guard lock(mutex_);
        std::erase_if(ids, [&](const std::string& id) { return !held_.insert(id).second; });
        return ids;
    }

    /// Holds `id` if it is not held yet; returns whether it did.
    bool hold_one(const std::string& id) {
        const std::lock_guard lock(mutex_);
        return held_.insert(id).second;
    }

    /// `n` held entries were handed to the pool.
    void entered_pool(std::size_t n) {
        const std::lock_guard lock(mutex_);
        in_pool_ += n;
    }

    /// `n` entries handed to the pool were refused (only while it shuts down).
    void left_pool(std::size_t n) {
        const std::lock_guard lock(mutex_);
        in_pool_ -= n;
    }

    /// Stops holding `ids` (acknowledged, dead-lettered, gone, or given up).
    template <class Ids>
    void release(const Ids& ids) {
        const std::lock_guard lock(mutex_);
        for (const auto& id : ids) {
            held_.erase(id);
        }
    }

    /// Moves the completions reported since the last call into `out` (appending).
    void take(completions& out) {
        const std::lock_guard lock(mutex_);
        if (out.acks.empty()) {
            out.acks.swap(done_.acks);
        } else {
            out.acks.insert(out.acks.end(), done_.acks.begin(), done_.acks.end());
            done_.acks.clear();
        }
        for (dead_letter& d : done_.dead) {
            out.dead.push_back(std::move(d));
        }
        done_.dead.clear();
    }

    /// How many ids are held.
    [[nodiscard]] std::size_t held() const {
        const std::lock_guard lock(mutex_);
        return held_.size();
    }

    /// Whether `id` is held.
    [[nodiscard]] bool holds(const std::string& id) const {
        const std::lock_guard lock(mutex_);
        return held_.count(id) == 1;
    }

    /// How many held entries are in the pool (queued, running or waiting to retry).
    [[nodiscard]] std::size_t in_pool() const {
        const std::lock_guard lock(mutex_);
        return in_pool_;
    }

    /// Every held id.
    [[nodiscard]] std::vector<std::string> held_ids() const {
        const std::lock_guard lock(mutex_);
        return {held_.begin(), held_.end()};
    }

    /// Waits up to `d` for a completion or a stop request; returns early when `ready()` (checked
    /// under the lock) is true. Returns false if stop was requested.
    template <class Ready>
    bool wait(const std::stop_token& st, std::chrono::milliseconds d, Ready ready) {
        std::unique_lock lock(mutex_);
        (void)cv_.wait_for(lock, st, d,
                           [&] { return !done_.acks.empty() || !done_.dead.empty() || ready(); });
        return !st.stop_requested();
    }

    /// Sleeps `d` unless stop is requested first; returns false if it was.
    bool sleep(const std::stop_token& st, std::chrono::milliseconds d) {
        std::unique_lock lock(mutex_);
        return !cv_.wait_for(lock, st, d, [] { return false; }) && !st.stop_requested();
    }

    /// Wakes the reader (after a stop request).
    void wake() { cv_.notify_all(); }

    /// Forgets everything (at the end of `stop`: what is left is pending in Redis).
    void clear() {
        const std::lock_guard lock(mutex_);
        held_.clear();
        in_pool_ = 0;
        done_.acks.clear();
        done_.dead.clear();
    }

private:
    mutable std::mutex mutex_;
    std::condition_variable_any cv_;        // completions and stop wake the reader
    std::unordered_set<std::string> held_;  // guarded by mutex_
    std::size_t in_pool_ = 0;               // guarded by mutex_; a subset of held_
    completions done_;                      // guarded by mutex_; reported, not yet taken
};

}  // namespace workerpool::redis::detail
