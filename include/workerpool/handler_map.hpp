#pragma once

/// @file
/// `handler_map<Request, Key, Result>`: a handler that routes each request to the handler
/// registered for its key, with that route's `job_options`, and `unknown_route`.

#include <workerpool/detail/null_callable.hpp>
#include <workerpool/detail/usage_checks.hpp>
#include <workerpool/handler.hpp>
#include <workerpool/options.hpp>
#include <workerpool/retry.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace workerpool {

/// Thrown by `handler_map` for a request whose key has no handler. It is a `permanent_error`, so
/// the default retry rule does not retry it: the request goes to `on_failure` with
/// `failure_reason::error` and this exception.
class unknown_route : public permanent_error {
public:
    /// Takes the message, as `permanent_error` does.
    using permanent_error::permanent_error;
};

/// A handler that routes each request, by a key taken from it, to the handler registered for that
/// key — the Go article's "request type → handler" map as a first-class, type-safe value.
///
/// ```cpp
/// workerpool::handler_map<job, job_kind> routes{[](const job& j) { return j.kind; }};
/// routes.on(job_kind::resize, [](job& j, const std::stop_token& st) { resize(j, st); })
///       .on(job_kind::email, [](job& j) { send(j); }, {.timeout = 5s, .max_attempts = 3});
/// workerpool::dispatcher<job> pool{std::move(routes), opts};
/// ```
///
/// A route may carry its own `job_options` (a timeout, an attempt count, a deadline). A
/// dispatcher built with the map applies them when a request is submitted: each field the
/// request's own `job_options` leaves at zero is taken from its route, and a field the route
/// leaves at zero too falls back to the pool's `options`. Routes without options cost nothing at
/// submit; with some, a submit looks up the request's route once more (`options_for`).
///
/// Thread safety: register every route before handing the map to a dispatcher; after that the
/// map is only read, and concurrent calls are safe.
/// With a `Result` (for a `dispatcher<Request, Result>`), every route's handler returns one.
template <class Request, class Key, class Result = void>
class handler_map {
public:
    /// The type every route is stored as.
    using route = std::function<Result(Request&, const std::stop_token&)>;

    /// Creates an empty map that takes keys from requests with `key_of`.
    template <class KeyOf>
    requires std::is_invocable_r_v<Key, KeyOf&, const Request&>
    explicit handler_map(KeyOf key_of) : key_of_(std::move(key_of)) {}

    /// Registers `h` (callable as `h(Request&, std::stop_token)` or `h(Request&)`) for `key`,
    /// with the route's `job_options` `jo` (all zero, the default: the pool's options), replacing
    /// any earlier route for `key`; returns `*this` for chaining. A handler that visibly takes the
    /// request by value fails to compile: it would lose what it writes into the request.
    /// Throws: `std::invalid_argument` if `h` is null (an empty `std::function`, a null function
    /// pointer), so that a missing handler is found here and not by every request of the route;
    /// `std::bad_alloc`.
    template <class Handler>
    handler_map& on(Key key, Handler h, job_options jo = {}) {
        static_assert(!detail::takes_request_by_value<Handler, Request>,
                      "handler_map::on: the handler takes the request by value, so what it writes "
                      "into the request (state kept across retries, results read by on_success) "
                      "is lost with its copy: take it as Request& (const Request& if it only "
                      "reads)");
        static_assert(detail::takes_request_by_value<Handler, Request> ||
                          detail::returns_v<Result, Handler&, Request&, std::stop_token> ||
                          detail::returns_v<Result, Handler&, Request&>,
                      "handler_map::on: the handler must be callable as h(Request&, "
                      "std::stop_token) or h(Request&), returning something convertible to "
                      "Result unless Result is void");
        if (detail::is_null_callable(h)) {
            throw std::invalid_argument("workerpool: handler_map::on: the route's handler is null "
                                        "(an empty std::function or a null function pointer)");
        }
        entry e{{}, jo};
        if constexpr (std::is_invocable_v<Handler&, Request&, std::stop_token>) {
            e.run = route(std::move(h));
        } else {
            e.run = route([fn = std::move(h)](Request& r, const std::stop_token&) mutable {
                return static_cast<Result>(fn(r));
            });
        }
        const auto old = routes_.find(key);
        const bool replaced_options = old != routes_.end() && has_any(old->second.options);
        routes_.insert_or_assign(std::move(key), std::move(e));
        with_options_ = with_options_ - (replaced_options ? 1 : 0) + (has_any(jo) ? 1 : 0);
        return *this;
    }

    /// Returns whether a handler is registered for `key`.
    [[nodiscard]] bool contains(const Key& key) const { return routes_.contains(key); }

    /// Returns the number of registered routes.
    [[nodiscard]] std::size_t size() const noexcept { return routes_.size(); }

    /// Returns whether any route carries `job_options` with a field set. A dispatcher built with
    /// a map without any looks nothing up at submit.
    [[nodiscard]] bool has_route_options() const noexcept { return with_options_ != 0; }

    /// Returns the `job_options` of the route `r` takes: all zero when its key has no route, or
    /// when taking or looking up the key throws (the handler call then throws the same, and the
    /// request fails with that error).
    /// Thread safety: any thread, once every route is registered.
    [[nodiscard]] job_options options_for(const Request& r) const noexcept {
        try {
            const auto it = routes_.find(key_of_(r));
            return it == routes_.end() ? job_options{} : it->second.options;
        } catch (...) {
            return {};
        }
    }

    /// Runs the handler registered for `r`'s key and returns what it returns. Throws
    /// `unknown_route` if there is none, and whatever the handler throws.
    Result operator()(Request& r, const std::stop_token& st) const {
        const auto it = routes_.find(key_of_(static_cast<const Request&>(r)));
        if (it == routes_.end()) {
            throw unknown_route(describe_missing(key_of_(static_cast<const Request&>(r))));
        }
        return it->second.run(r, st);
    }

private:
    // A route: its handler and the job_options its requests get where their own leave a zero.
    struct entry {
        route run;
        job_options options;
    };

    static bool has_any(const job_options& jo) noexcept {
        return jo.timeout.count() > 0 || jo.max_attempts != 0 ||
               jo.deadline != std::chrono::steady_clock::time_point{};
    }

    static std::string describe_missing(const Key& key) {
        std::string msg = "workerpool: handler_map has no handler for key ";
        if constexpr (std::is_enum_v<Key>) {
            msg += std::to_string(static_cast<std::underlying_type_t<Key>>(key));
        } else if constexpr (std::is_arithmetic_v<Key>) {
            msg += std::to_string(key);
        } else if constexpr (std::is_convertible_v<const Key&, std::string>) {
            msg += '"' + std::string(key) + '"';
        } else {
            msg += "(key not printable)";
        }
        return msg;
    }

    std::function<Key(const Request&)> key_of_;
    std::unordered_map<Key, entry> routes_;
    std::size_t with_options_ = 0;  // routes whose options have a field set
};

}  // namespace workerpool
