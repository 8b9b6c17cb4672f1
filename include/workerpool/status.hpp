#pragma once

/// @file
/// `submit_status` (what a submit call returns), `failure_reason` and `failure<Request>` (what the
/// dead-letter sink receives), `what()`, the message of a failure's exception, and `wait_deadlock`.

#include <exception>
#include <stdexcept>
#include <string>

namespace workerpool {

/// The outcome of a submission. A request is moved from only when the result is `accepted`.
enum class submit_status {
    accepted,  ///< The request is queued; it will end exactly once (completed, failed, or
               ///< returned).
    full,      ///< The queue had no free slot (or a timed submit ran out of time).
    closed,    ///< The pool is shutting down and takes no more requests.
};

/// Why a request ended in the dead-letter sink (`options::on_failure`).
enum class failure_reason {
    error,      ///< The handler threw on its last allowed attempt (or `retry_if` declined a retry).
    timed_out,  ///< The last attempt threw after its deadline stopped its token.
    cancelled,  ///< The attempt threw after shutdown stopped its token, or the destructor had to
                ///< discard a request that was never run.
    expired,    ///< The request's absolute deadline (`job_options::deadline`) passed before it ran.
};

/// Returns a short, stable English name for `r` ("error", "timed_out", ...).
constexpr const char* to_string(failure_reason r) noexcept {
    switch (r) {
    case failure_reason::error:
        return "error";
    case failure_reason::timed_out:
        return "timed_out";
    case failure_reason::cancelled:
        return "cancelled";
    case failure_reason::expired:
        return "expired";
    }
    return "unknown";
}

/// Returns a short, stable English name for `s` ("accepted", "full", "closed").
constexpr const char* to_string(submit_status s) noexcept {
    switch (s) {
    case submit_status::accepted:
        return "accepted";
    case submit_status::full:
        return "full";
    case submit_status::closed:
        return "closed";
    }
    return "unknown";
}

/// Thrown by `dispatcher::wait_idle()` when it is called from one of the pool's own threads (a
/// handler, or a callback such as `on_failure` or `on_event` running on a worker or the
/// supervisor): the pool cannot become idle while the caller waits inside it.
class wait_deadlock : public std::logic_error {
public:
    /// Takes the message, as `std::logic_error` does.
    using std::logic_error::logic_error;
};

/// A request that will not be processed, handed to the dead-letter sink with its history.
template <class Request>
struct failure {
    Request request;           ///< The request itself, moved out of the pool.
    failure_reason reason{};   ///< Why it ended here.
    unsigned attempts = 0;     ///< How many times the handler was called (0 if it never ran).
    std::exception_ptr error;  ///< The last exception the handler threw; null if none.
};

/// Returns the message of the exception `error` holds: `what()` of a `std::exception` (of any
/// class derived from it), the fixed text "unknown exception (not derived from std::exception)"
/// for anything else that was thrown, and an empty string when `error` is null. Spares every
/// `on_failure` the rethrow-and-catch: `workerpool::what(f.error)`.
/// Throws: `std::bad_alloc` only. Thread safety: any thread; the exception object is only read.
[[nodiscard]] inline std::string what(const std::exception_ptr& error) {
    if (!error) {
        return {};
    }
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        const char* message = e.what();
        return message != nullptr ? message : "";
    } catch (...) {
        return "unknown exception (not derived from std::exception)";
    }
}

}  // namespace workerpool
