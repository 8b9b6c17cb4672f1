#pragma once

/// @file
/// Not API: the ledger of what a `stream_consumer` holds, the one piece of state its pool threads
/// and its reader thread share.

#include <workerpool/redis/detail/stream_id.hpp>
#include <workerpool/redis/stream_entry.hpp>
#include <workerpool/status.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

namespace workerpool::redis::detail {

/// An entry to copy to the dead-letter stream, with why.
struct dead_letter {
    stream_entry entry;     ///< The entry, fields and all.
    std::string reason;     ///< `to_string(failure_reason)`, or "too_many_deliveries".
    unsigned attempts = 0;  ///< Handler calls in this process (0: not run here).
    std::string error;      ///< The last exception's message, or why it was not run.
};

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
        std::vector<stream_id> acks;      ///< Handlers returned: acknowledge these.
        std::vector<dead_letter> dead;    ///< Failed for good: dead-letter these.
        std::vector<stream_entry> spent;  ///< What is left of finished entries: destroy these.
        /// Failed for good, but their dead letters could not be booked (out of memory on a pool
        /// thread): stop holding these; they are pending here, and the own-list scan takes them
        /// up again.
        std::vector<stream_id> retake;
    };

    /// Room for `n` ids before the set grows, and for `n` completions (`n` bounds what is held,
    /// so booking a completion on a pool thread never allocates for its id).
    explicit ledger(std::size_t n) : held_(n) {
        done_.acks.reserve(n);
        done_.retake.reserve(n);
    }

    // --- pool threads ----------------------------------------------------------------------

    /// The handler of the entry `id` returned: it is owed an acknowledgement. `spent` is what is
    /// left of the entry: the reader destroys it, so that its memory goes back to the thread that
    /// allocated it (freeing on pool threads cost more than the rest of the bookkeeping).
    /// Never allocates for the id (room for every held id is reserved); when `spent` cannot be
    /// kept (out of memory), it is left to its owner to destroy.
    void completed(std::optional<stream_id> id, stream_entry&& spent) {
        bool wake = false;
        {
            const std::lock_guard lock(mutex_);
            --in_pool_;
            if (id) {
                done_.acks.push_back(*id);  // within the capacity reserved: no allocation
            }
            try {
                done_.spent.push_back(std::move(spent));  // on failure `spent` is untouched
            } catch (const std::bad_alloc&) {
                // Its memory is freed on this thread instead: only slower.
            }
            wake = reader_waiting_;
        }
        if (wake) {
            cv_.notify_one();
        }
    }

    /// `f` will not be processed: dead-letter it, unless shutdown cancelled it (then it stays
    /// pending in Redis for another consumer). When its dead letter cannot be built (out of
    /// memory: it copies the entry), its id goes to `retake` instead (no allocation: room for
    /// every held id is reserved), and the entry runs again.
    void failed(const failure<stream_entry>& f) {
        {
            const std::lock_guard lock(mutex_);
            --in_pool_;
            if (f.reason != failure_reason::cancelled) {
                try {
                    done_.dead.push_back(
                        {f.request, to_string(f.reason), f.attempts, workerpool::what(f.error)});
                } catch (const std::bad_alloc&) {
                    const std::optional<stream_id> id = parse_id(f.request.id);
                    if (id && done_.retake.size() < done_.retake.capacity()) {
                        done_.retake.push_back(*id);
                    }
                }
            }
        }
        cv_.notify_one();
    }

    // --- the reader thread -----------------------------------------------------------------

    /// Holds each of `ids` not held yet; sets `taken[i]` to whether it took `ids[i]` (the others
    /// are held already: read twice, or claimed while running here). Returns how many it took.
    /// All or nothing: out of memory, it throws before holding any.
    std::size_t hold(const std::vector<stream_id>& ids, std::vector<bool>& taken) {
        taken.assign(ids.size(), false);
        std::size_t n = 0;
        const std::lock_guard lock(mutex_);
        held_.reserve(held_.size() + ids.size());
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (held_.insert(ids[i])) {
                taken[i] = true;
                ++n;
            }
        }
        return n;
    }

    /// `hold` for ids as text (an id that does not parse is not taken). All or nothing.
    std::vector<std::string> hold(std::vector<std::string> ids) {
        const std::lock_guard lock(mutex_);
        held_.reserve(held_.size() + ids.size());
        std::erase_if(ids, [&](const std::string& id) {
            const std::optional<stream_id> parsed = parse_id(id);
            return !parsed || !held_.insert(*parsed);
        });
        return ids;
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
    void release(std::span<const stream_id> ids) {
        const std::lock_guard lock(mutex_);
        for (const stream_id id : ids) {
            (void)held_.erase(id);
        }
    }

    /// `release` for ids as text. Never allocates.
    void release(std::span<const std::string> ids) {
        const std::lock_guard lock(mutex_);
        for (const std::string& id : ids) {
            if (const std::optional<stream_id> parsed = parse_id(id)) {
                (void)held_.erase(*parsed);
            }
        }
    }

    /// Moves the completions reported since the last call into `out` (appending; `out.spent` is
    /// swapped, so clear it before the next call). All or nothing: out of memory, it throws
    /// before taking any.
    void take(completions& out) {
        const std::lock_guard lock(mutex_);
        out.dead.reserve(out.dead.size() + done_.dead.size());  // then the moves cannot fail
        out.retake.reserve(out.retake.size() + done_.retake.size());
        out.acks.insert(out.acks.end(), done_.acks.begin(), done_.acks.end());
        done_.acks.clear();
        out.retake.insert(out.retake.end(), done_.retake.begin(), done_.retake.end());
        done_.retake.clear();
        for (dead_letter& d : done_.dead) {
            out.dead.push_back(std::move(d));
        }
        done_.dead.clear();
        out.spent.swap(done_.spent);
    }

    /// How many ids are held.
    [[nodiscard]] std::size_t held() const {
        const std::lock_guard lock(mutex_);
        return held_.size();
    }

    /// Whether `id` is held.
    [[nodiscard]] bool holds(stream_id id) const {
        const std::lock_guard lock(mutex_);
        return held_.contains(id);
    }

    /// How many held entries are in the pool (queued, running or waiting to retry).
    [[nodiscard]] std::size_t in_pool() const {
        const std::lock_guard lock(mutex_);
        return in_pool_;
    }

    /// Every held id.
    [[nodiscard]] std::vector<stream_id> held_ids() const {
        const std::lock_guard lock(mutex_);
        return held_.items();
    }

    /// Waits up to `d` for a completion or a stop request. Returns false if stop was requested.
    bool wait(const std::stop_token& st, std::chrono::milliseconds d) {
        std::unique_lock lock(mutex_);
        reader_waiting_ = true;
        (void)cv_.wait_for(lock, st, d, [&] { return !done_.acks.empty() || !done_.dead.empty(); });
        reader_waiting_ = false;
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
        done_.spent.clear();
        done_.retake.clear();
    }

private:
    mutable std::mutex mutex_;
    std::condition_variable_any cv_;  // completions (while the reader waits) and stop wake it
    id_set held_;                     // guarded by mutex_
    std::size_t in_pool_ = 0;         // guarded by mutex_; a subset of held_
    completions done_;                // guarded by mutex_; reported, not yet taken
    bool reader_waiting_ = false;     // guarded by mutex_; completions notify only then
};

}  // namespace workerpool::redis::detail
