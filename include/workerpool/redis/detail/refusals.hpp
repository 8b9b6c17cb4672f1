#pragma once

/// @file
/// `redis::detail::refusals`: the held entries the pool refused (its scheduler had no memory),
/// kept without allocating until they are submitted again.

#include <workerpool/redis/stream_entry.hpp>

#include <cstddef>
#include <utility>
#include <vector>

namespace workerpool::redis::detail {

/// Entries the pool refused, to submit again. Room for as many as may be held is reserved at
/// construction, so keeping one never allocates (a refusal is what happens when memory is short).
/// Reader thread only.
class refusals {
public:
    /// Room for `held` entries: the most the consumer holds at once.
    explicit refusals(std::size_t held) {
        kept_.reserve(held);
        again_.reserve(held);
    }

    /// Keeps `e` (moved from) and returns true, or returns false with `e` untouched when the
    /// reserved room is full (never while at most `held` entries are held).
    bool keep(stream_entry& e) noexcept {
        if (kept_.size() == kept_.capacity()) {
            return false;
        }
        kept_.push_back(std::move(e));  // within the reserved room: no allocation
        return true;
    }

    [[nodiscard]] bool empty() const noexcept { return kept_.empty(); }

    /// Hands every kept entry to `submit(std::vector<stream_entry>&)`, which keeps again those
    /// refused again; returns whether none was.
    template <class Submit>
    bool resubmit(Submit&& submit) {
        again_.swap(kept_);
        submit(again_);
        again_.clear();
        return kept_.empty();
    }

    /// Forgets every kept entry (they stay pending in Redis).
    void clear() noexcept { kept_.clear(); }

private:
    std::vector<stream_entry> kept_;
    std::vector<stream_entry> again_;  // the ones being submitted again
};

}  // namespace workerpool::redis::detail
