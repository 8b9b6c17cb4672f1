#pragma once

/// @file
/// `handler_map<Request, Key>`: a handler that routes each request to the handler registered for
/// its key, and `unknown_route`.

#include <workerpool/detail/null_callable.hpp>
#include <workerpool/retry.hpp>

#include <concepts>
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
///       .on(job_kind::email, [](job& j) { send(j); });
/// workerpool::dispatcher<job> pool{std::move(routes), opts};
/// ```
///
/// Thread safety: register every route before handing the map to a dispatcher; after that the
/// map is only read, and concurrent calls are safe.
template <class Request, class Key>
class handler_map {
public:
    /// The type every route is stored as.
    using route = std::function<void(Request&, const std::stop_token&)>;

    /// Creates an empty map that takes keys from requests with `key_of`.
    template <class KeyOf>
    requires std::is_invocable_r_v<Key, KeyOf&, const Request&>
    explicit handler_map(KeyOf key_of) : key_of_(std::move(key_of)) {}

    /// Registers `h` (callable as `h(Request&, std::stop_token)` or `h(Request&)`) for `key`,
    /// replacing any earlier one; returns `*this` for chaining.
    /// Throws: `std::invalid_argument` if `h` is null (an empty `std::function`, a null function
    /// pointer), so that a missing handler is found here and not by every request of the route;
    /// `std::bad_alloc`.
    template <class Handler>
    handler_map& on(Key key, Handler h) {
        if (detail::is_null_callable(h)) {
            throw std::invalid_argument("workerpool: handler_map::on: the route's handler is null "
                                        "(an empty std::function or a null function pointer)");
        }
        if constexpr (std::is_invocable_v<Handler&, Request&, std::stop_token>) {
            routes_.insert_or_assign(std::move(key), route(std::move(h)));
        } else {
            static_assert(std::is_invocable_v<Handler&, Request&>,
                          "handler_map::on: the handler must be callable as h(Request&, "
                          "std::stop_token) or h(Request&)");
            routes_.insert_or_assign(
                std::move(key),
                route([fn = std::move(h)](Request& r, const std::stop_token&) mutable { fn(r); }));
        }
        return *this;
    }

    /// Returns whether a handler is registered for `key`.
    [[nodiscard]] bool contains(const Key& key) const { return routes_.contains(key); }

    /// Returns the number of registered routes.
    [[nodiscard]] std::size_t size() const noexcept { return routes_.size(); }

    /// Runs the handler registered for `r`'s key. Throws `unknown_route` if there is none, and
    /// whatever the handler throws.
    void operator()(Request& r, const std::stop_token& st) const {
        const auto it = routes_.find(key_of_(static_cast<const Request&>(r)));
        if (it == routes_.end()) {
            throw unknown_route(describe_missing(key_of_(static_cast<const Request&>(r))));
        }
        it->second(r, st);
    }

private:
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
    std::unordered_map<Key, route> routes_;
};

}  // namespace workerpool
