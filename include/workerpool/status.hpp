#pragma once

/// @file
/// `submit_status` (what a submit call returns), `failure_reason` and `failure<Request>` (what the
/// dead-letter sink receives), `what()`, the message of a failure's exception, `wait_deadlock`,
/// and for tracked requests `request_state` and `request_failed`.

#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

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

/// Where a tracked request is in its life (`handle::state()`).
enum class request_state {
    queued,       ///< Waiting in the queue for a worker.
    running,      ///< A worker runs its handler (or is ending it).
    retry_wait,   ///< An attempt failed; it waits out its backoff before the next one.
    succeeded,    ///< Its handler returned (final).
    failed,       ///< It reached `on_failure` (final): attempts exhausted, timed out, or expired.
    cancelled,    ///< Its handle (or group) cancelled it, or shutdown stopped it (final).
    handed_back,  ///< Shutdown returned it unprocessed in `shutdown_report::unprocessed` (final).
};

/// Returns a short, stable English name for `s` ("queued", "running", ...).
constexpr const char* to_string(request_state s) noexcept {
    switch (s) {
    case request_state::queued:
        return "queued";
    case request_state::running:
        return "running";
    case request_state::retry_wait:
        return "retry_wait";
    case request_state::succeeded:
        return "succeeded";
    case request_state::failed:
        return "failed";
    case request_state::cancelled:
        return "cancelled";
    case request_state::handed_back:
        return "handed_back";
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

/// Thrown by `handle::get()` (and `co_await` on a handle) when the request did not succeed: it
/// failed, was cancelled, or was handed back by shutdown. Carries its history: the final state,
/// the reason (`cancelled` for a request shutdown handed back), the attempts made and the last
/// exception its handler threw (null if none).
class request_failed : public std::runtime_error {
public:
    /// Records the end; the message names the state, the reason and the last error's text.
    request_failed(request_state state, failure_reason reason, unsigned attempts,
                   std::exception_ptr error)
        : std::runtime_error(message(state, reason, error)), state_(state), reason_(reason),
          attempts_(attempts), error_(std::move(error)) {}

    /// How the request ended: `failed`, `cancelled` or `handed_back`.
    [[nodiscard]] request_state state() const noexcept { return state_; }
    /// Why (as `failure<Request>::reason`; `cancelled` for a request handed back).
    [[nodiscard]] failure_reason reason() const noexcept { return reason_; }
    /// How many times the handler was called.
    [[nodiscard]] unsigned attempts() const noexcept { return attempts_; }
    /// The last exception the handler threw; null if none.
    [[nodiscard]] const std::exception_ptr& error() const noexcept { return error_; }

private:
    static std::string message(request_state state, failure_reason reason,
                               const std::exception_ptr& error) {
        std::string m =
            std::string("workerpool: request ") + to_string(state) + " (" + to_string(reason) + ")";
        if (error) {
            m += ": " + ::workerpool::what(error);
        }
        return m;
    }

    request_state state_;
    failure_reason reason_;
    unsigned attempts_;
    std::exception_ptr error_;
};

}  // namespace workerpool
