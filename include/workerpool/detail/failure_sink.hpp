#pragma once

/// @file
/// `detail::failure_sink<Request>`: how a request that will not be processed reaches
/// `options::on_failure` — its record built in place, never on a thread's stack.

#include <workerpool/detail/callbacks.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/status.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace workerpool::detail {

/// Hands failed requests to `on_failure`. A worker builds each record in room of its own (its
/// slot, on the heap); the destructor uses room allocated here at construction when a record is
/// too large for a thread's stack, so that it never allocates.
///
/// Thread safety: `deliver` from any thread with its own room; `deliver_unowned` from one thread
/// at a time (the supervisor's purge while it runs; shutdown and the destructor once it stopped).
template <class Request>
class failure_sink {
public:
    /// The room a record is built in.
    using room = uninitialized<failure<Request>>;

    /// Whether a record is too large for a thread's stack.
    static constexpr bool big = sizeof(failure<Request>) > stack_friendly_bytes;

    /// Delivers to `on_failure` (which outlives this object; empty: records are not built),
    /// guarded by `calls`. Throws: `std::bad_alloc` (the spare room of a big record).
    failure_sink(const std::function<void(failure<Request>&&)>& on_failure, callbacks& calls)
        : on_failure_(on_failure), calls_(calls) {
        if constexpr (big) {
            spare_.reset(new room);
        }
    }

    /// Builds the record in `r` and hands it to `on_failure`.
    void deliver(room& r, Request&& request, failure_reason reason, unsigned attempts,
                 std::exception_ptr error) noexcept {
        if (!on_failure_) {
            return;
        }
        auto* f = ::new (r.place())
            failure<Request>{std::move(request), reason, attempts, std::move(error)};
        calls_.guard(on_failure_, std::move(*f));
        std::destroy_at(f);
    }

    /// For requests that the destructor must discard: each goes to `on_failure` as `cancelled`
    /// with its attempts and last error, after `before(e)` (an event, say) and before `after(e)`.
    template <class Envelope, class Before, class After>
    void deliver_unowned(std::vector<Envelope>& left, Before&& before, After&& after) noexcept {
        for (Envelope& e : left) {
            before(e);
            if constexpr (big) {
                deliver(*spare_, std::move(e.request), failure_reason::cancelled, e.attempts,
                        e.last_error);
            } else {
                room r;
                deliver(r, std::move(e.request), failure_reason::cancelled, e.attempts,
                        e.last_error);
            }
            after(e);
            // [H3] release: this request's on_failure ran; pairs with [H4]
            unowned_.fetch_add(1, std::memory_order_release);
        }
    }

    /// Requests discarded by `deliver_unowned` so far (they count as failed); once a request is
    /// counted here, its `on_failure` call is visible to the reader.
    [[nodiscard]] std::uint64_t unowned() const noexcept {
        return unowned_.load(std::memory_order_acquire);  // [H4] pairs with [H3]
    }

private:
    const std::function<void(failure<Request>&&)>& on_failure_;
    callbacks& calls_;
    std::unique_ptr<room> spare_;            // big records only; see the class comment
    std::atomic<std::uint64_t> unowned_{0};  // see [H3]
};

}  // namespace workerpool::detail
