#pragma once

/// @file
/// `detail::envelope<Request>`: a request with the bookkeeping that travels with it through the
/// queue and the delay queue; `detail::uninitialized<T>`: room for a `T` built by hand.

#include <workerpool/detail/clock.hpp>
#include <workerpool/options.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>

namespace workerpool::detail {

class completion_slot;

/// A request's own settings: `job_options` with the pool's defaults where it leaves them at zero.
struct request_settings {
    std::int64_t timeout_ns = 0;  // per-attempt timeout; 0 = none
    std::int64_t expires_ns = 0;  // absolute expiry (steady-clock ns); 0 = none
    unsigned max_attempts = 1;    // total attempts allowed

    /// `jo`, completed by `default_timeout` and `default_attempts`.
    [[nodiscard]] static request_settings of(const job_options& jo,
                                             std::chrono::nanoseconds default_timeout,
                                             unsigned default_attempts) noexcept {
        request_settings r;
        r.timeout_ns = jo.timeout.count() > 0 ? jo.timeout.count() : default_timeout.count();
        r.expires_ns = jo.deadline == std::chrono::steady_clock::time_point{}
                           ? 0
                           : std::max<std::int64_t>(1, to_ns(jo.deadline));
        r.max_attempts = jo.max_attempts > 0 ? jo.max_attempts : default_attempts;
        return r;
    }
};

/// A request with the bookkeeping that travels with it through the queue and the retry delay
/// queue. Stored in place in a ring slot: no allocation per request. Owned by whoever holds it
/// (a ring slot, a worker, the delay queue); never shared.
template <class Request>
struct envelope {
    Request request;
    std::int64_t timeout_ns;        // per-attempt timeout; 0 = none
    std::int64_t expires_ns;        // absolute expiry; 0 = none
    unsigned max_attempts;          // total attempts allowed
    unsigned attempts = 0;          // attempts made so far
    std::exception_ptr last_error;  // the last attempt's exception, for the dead-letter record
    std::int64_t enqueued_ns;       // when it became runnable, if sampled for latency; else 0
    // A tracked request's completion (one reference is the pool's); null for a plain submit.
    completion_slot* ticket;

    envelope(Request&& r, const request_settings& s, std::int64_t enqueued,
             completion_slot* t = nullptr) noexcept
        : request(std::move(r)), timeout_ns(s.timeout_ns), expires_ns(s.expires_ns),
          max_attempts(s.max_attempts), enqueued_ns(enqueued), ticket(t) {}
};

/// Room for one `T`, constructed and destroyed by hand (placement new, `std::destroy_at`), so that
/// an aggregate such as `failure<Request>` can be built in place, with no temporary on the stack.
template <class T>
struct alignas(T) uninitialized {
    std::array<unsigned char, sizeof(T)> bytes;  // not initialised: built by hand

    /// Where the object goes.
    [[nodiscard]] void* place() noexcept { return bytes.data(); }
};

/// Objects up to this size may sit on a thread's stack; larger ones never do (a worker's stack is
/// 8 MiB by default, and other threads may have far less).
inline constexpr std::size_t stack_friendly_bytes = std::size_t{16} * 1024;

}  // namespace workerpool::detail
