#pragma once

/// @file
/// `request_handler`: what a pool's handler must be.

#include <workerpool/detail/erased_handler.hpp>
#include <workerpool/detail/usage_checks.hpp>

#include <stop_token>
#include <type_traits>
#include <utility>

namespace workerpool {

namespace detail {

/// Whether `H` is callable with `Args...` and, unless `Result` is `void`, returns something
/// convertible to `Result`.
template <class Result, class H, class... Args>
inline constexpr bool returns_v =
    std::is_void_v<Result> ? std::is_invocable_v<H, Args...>
                           : std::is_invocable_r_v<Result, H, Args...>;

}  // namespace detail

/// True when `H` can serve as a handler for `Request`: callable as `h(Request&, std::stop_token)`
/// or as `h(Request&)`, returning something convertible to `Result` unless `Result` is `void`,
/// and not visibly taking the request by value (a function pointer, or a class with one
/// non-template `operator()`, whose first parameter is `Request`): a handler works on the pool's
/// request, so that what it writes into it stays for the retries and `on_success`.
template <class H, class Request, class Result = void>
concept request_handler =
    (detail::returns_v<Result, H&, Request&, std::stop_token> ||
     detail::returns_v<Result, H&, Request&>)&&!detail::takes_request_by_value<H, Request>;

namespace detail {

/// `h`, checked at compile time (a clear message for a handler that takes the request by value
/// or has the wrong signature) and at run time (a null handler throws `std::invalid_argument`),
/// behind one indirect call.
template <class Request, class Result = void, class Handler>
[[nodiscard]] erased_handler<Request, Result> checked_handler(Handler&& h) {
    using handler_type = std::decay_t<Handler>;
    static_assert(!takes_request_by_value<handler_type, Request>,
                  "dispatcher<Request>: the handler takes the request by value, so what it "
                  "writes into the request (state kept across retries, results read by "
                  "on_success) is lost with its copy: take it as Request& (const Request& if "
                  "it only reads)");
    static_assert(takes_request_by_value<handler_type, Request> ||
                      request_handler<handler_type, Request, Result>,
                  "dispatcher<Request, Result>: the handler must be callable as "
                  "handler(Request&, const std::stop_token&) or handler(Request&), the request "
                  "by reference, and return something convertible to Result unless Result is "
                  "void; check the request type, the parameter order and the return type");
    return erased_handler<Request, Result>(std::forward<Handler>(h));  // refuses a null one
}

}  // namespace detail

}  // namespace workerpool
