#pragma once

/// @file
/// Compile-time checks that turn two easy mistakes into an error that says what to write:
/// `detail::takes_request_by_value` (a handler that takes the request by value, refused by the
/// pool and by `handler_map`) and `detail::lvalue_submit` (a request passed to a submit call as
/// an lvalue).

#include <workerpool/status.hpp>

#include <functional>
#include <type_traits>
#include <utility>

namespace workerpool::detail {

/// The first parameter of the `std::function` signature that class template argument deduction
/// gives a callable; no `type` when the signature has no parameter.
template <class Function>
struct first_parameter_of {};

template <class R, class First, class... Rest>
struct first_parameter_of<std::function<R(First, Rest...)>> {
    using type = First;
};

/// `H`'s first parameter type, where `H`'s parameter types can be seen: a function pointer, or a
/// class with exactly one `operator()` that is not a template (a lambda without `auto`
/// parameters, most function objects, `std::function`). Deduced the way `std::function`'s
/// deduction guides do it, so every cv, reference and `noexcept` qualifier of `operator()` is
/// covered. A generic lambda or an overloaded `operator()` has no single signature: then there is
/// no such type, and nothing is checked.
template <class H>
using first_parameter_t =
    typename first_parameter_of<decltype(std::function{std::declval<H>()})>::type;

/// True when `first_parameter_t<H>` exists: `H`'s parameter types can be seen.
template <class H>
concept has_visible_first_parameter = requires {
    typename first_parameter_t<H>;
};

/// True when `H` visibly takes the request by value (a parameter of type `Request`; a top-level
/// `const` is not part of a function's type): the handler would then work on a copy, and what it
/// writes into the request (state kept across retries, results that `on_success` reads) would be
/// lost with that copy.
template <class H, class Request>
concept takes_request_by_value =
    has_visible_first_parameter<H> && std::is_same_v<first_parameter_t<H>, Request>;

/// True when `R`, the deduced type of a submit call's argument, is a `Request` lvalue: the
/// overloads that take it exist only to turn "cannot bind rvalue reference" into `lvalue_submit`'s
/// message.
template <class R, class Request>
concept request_lvalue =
    std::is_lvalue_reference_v<R> && std::is_same_v<std::remove_cvref_t<R>, Request>;

template <class>
inline constexpr bool always_false = false;

/// Instantiated by a submit call given a `Request` lvalue; its only content is the message.
template <class R>
struct lvalue_submit {
    /// Never compiles; named by the submit overloads that take an lvalue.
    static submit_status refuse() noexcept { return submit_status::closed; }
    static_assert(always_false<R>,
                  "dispatcher: submit, try_submit and submit_for (and their _tracked forms) take "
                  "the request as an rvalue: "
                  "pass std::move(request). The request is moved from only when the call returns "
                  "accepted; on full or closed it is left untouched, so you may retry, log or "
                  "keep it. To submit a copy and keep the original, pass Request(request).");
};

/// The submit calls of a pool, given a `Request` lvalue: each fails to compile with
/// `lvalue_submit`'s message instead of "cannot bind rvalue reference". `dispatcher` brings them
/// in beside its own calls with using-declarations.
template <class Request>
class lvalue_submits {
public:
    /// Not callable: see `lvalue_submit`.
    template <class R, class... Rest>
    requires request_lvalue<R, Request> submit_status try_submit(R&&, Rest&&...)
    noexcept { return lvalue_submit<R>::refuse(); }
    /// Not callable: see `lvalue_submit`.
    template <class R, class... Rest>
    requires request_lvalue<R, Request> submit_status submit(R&&, Rest&&...)
    noexcept { return lvalue_submit<R>::refuse(); }
    /// Not callable: see `lvalue_submit`.
    template <class R, class... Rest>
    requires request_lvalue<R, Request> submit_status submit_for(R&&, Rest&&...)
    noexcept { return lvalue_submit<R>::refuse(); }
    /// Not callable: see `lvalue_submit`.
    template <class R, class... Rest>
    requires request_lvalue<R, Request> submit_status try_submit_tracked(R&&, Rest&&...)
    noexcept { return lvalue_submit<R>::refuse(); }
    /// Not callable: see `lvalue_submit`.
    template <class R, class... Rest>
    requires request_lvalue<R, Request> submit_status submit_tracked(R&&, Rest&&...)
    noexcept { return lvalue_submit<R>::refuse(); }
    /// Not callable: see `lvalue_submit`.
    template <class R, class... Rest>
    requires request_lvalue<R, Request> submit_status submit_for_tracked(R&&, Rest&&...)
    noexcept { return lvalue_submit<R>::refuse(); }
};

/// The compile-time rules a `dispatcher<Request, Result>` puts on its types, with the messages a
/// user sees when one is broken.
template <class Request, class Result>
struct request_type_checks {
    static_assert(std::is_object_v<Request> && !std::is_const_v<Request>,
                  "dispatcher<Request>: Request must be a non-const object type");
    // The destructor first: a throwing destructor also makes the move check false (GCC counts the
    // temporary's destruction), and Clang stops at the first failed assertion.
    static_assert(std::is_nothrow_destructible_v<Request>,
                  "dispatcher<Request>: Request's destructor must not throw");
    static_assert(!std::is_nothrow_destructible_v<Request> ||
                      std::is_nothrow_move_constructible_v<Request>,
                  "dispatcher<Request>: Request must be nothrow move-constructible (a request "
                  "moves into the queue and out of it, and neither move may fail); give it a "
                  "noexcept move constructor, or submit a std::unique_ptr<Request>");
    static_assert(std::is_void_v<Result> ||
                      (std::is_object_v<Result> && std::is_nothrow_move_constructible_v<Result> &&
                       std::is_nothrow_destructible_v<Result>),
                  "dispatcher<Request, Result>: Result must be void or an object type that is "
                  "nothrow move-constructible and nothrow destructible");
    static constexpr bool checked = true;  ///< Read to instantiate the checks.
};

}  // namespace workerpool::detail
