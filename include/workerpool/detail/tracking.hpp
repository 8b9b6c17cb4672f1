#pragma once

/// @file
/// `detail::tracking<Result>`: a pool's side of tracked requests — the slab their completions
/// live in, the tracked submit (a slot taken before the push, given back on a refusal), and the
/// end of a tracked request (`settle`).

#include <workerpool/detail/completion.hpp>
#include <workerpool/handle.hpp>
#include <workerpool/status.hpp>

#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// Where a worker keeps what its handler returned until the outcome takes it.
template <class Result>
struct result_room {
    std::optional<Result> value;
};
/// No result: no room.
template <>
struct result_room<void> {};

/// Ends a tracked request whose end the caller claimed (or found cancelled): publishes `final`,
/// lets go of the pool's reference, and resumes the coroutine that awaited it, through `guard`
/// (`guard(f)` runs `f` and contains what it throws).
template <class Guard>
void settle(completion_slot& t, request_state final, failure_reason reason, unsigned attempts,
            std::exception_ptr error, Guard&& guard) noexcept {
    const std::coroutine_handle<> c = t.finish(final, reason, attempts, std::move(error));
    t.release();
    if (c) {
        guard([c] { c.resume(); });
    }
}

/// The tracked submit path of one pool, over its untracked one.
///
/// Thread safety: `submit` from any thread.
template <class Result>
class tracking {
public:
    /// The completions of this pool's tracked requests. Throws: `std::bad_alloc`.
    tracking() : slab_(std::make_shared<completion_slab<Result>>()) {}

    /// Takes a slot (one reference for the pool, one for the handle, one for `group` if any),
    /// joins it to `group`, and calls `push(slot)`, which submits the request with that ticket.
    /// Accepted: returns the handle. Refused: gives the slot back and returns an empty handle.
    /// Throws: `std::bad_alloc` when the slab must grow and cannot.
    template <class Push>
    [[nodiscard]] tracked<Result> submit(Push&& push, group_link* group = nullptr) {
        completion<Result>& slot = slab_->acquire(group != nullptr ? 3 : 2);
        slot.join(group);
        const submit_status s = push(static_cast<completion_slot*>(&slot));
        if (s != submit_status::accepted) {
            for (int refs = group != nullptr ? 3 : 2; refs != 0; --refs) {
                slot.release();
            }
            return {s, {}};
        }
        return {s, handle_access::make(std::shared_ptr<completion<Result>>(slab_, &slot))};
    }

    /// Sorts what shutdown did not process: a tracked request it can still end goes back to its
    /// handle as `handed_back` and stays in `left`; one its handle cancelled while it waited
    /// moves to the returned list, for `on_failure`. Out of memory for the sorting, every one
    /// stays in `left` (a cancelled one's handle still reports `cancelled`).
    template <class Envelope, class Guard>
    [[nodiscard]] static std::vector<Envelope> hand_back(std::vector<Envelope>& left,
                                                         Guard&& guard) noexcept {
        std::vector<Envelope> kept;
        std::vector<Envelope> cancelled;
        bool sorting = true;
        try {
            kept.reserve(left.size());
            cancelled.reserve(left.size());
        } catch (...) {
            sorting = false;
        }
        for (Envelope& e : left) {
            if (e.ticket != nullptr && !e.ticket->begin_final() && sorting) {
                cancelled.push_back(std::move(e));  // reserved: cannot throw
                continue;
            }
            if (e.ticket != nullptr) {
                settle(*e.ticket, request_state::handed_back, failure_reason::cancelled, e.attempts,
                       e.last_error, guard);
                e.ticket = nullptr;
            }
            if (sorting) {
                kept.push_back(std::move(e));  // reserved: cannot throw
            }
        }
        if (sorting) {
            left.swap(kept);
        }
        return cancelled;
    }

private:
    std::shared_ptr<completion_slab<Result>> slab_;
};

}  // namespace workerpool::detail
