#pragma once

/// @file
/// `detail::erased_handler<Request, Result>`: the pool's handler behind one indirect call.

#include <workerpool/detail/null_callable.hpp>

#include <memory>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace workerpool::detail {

/// A type-erased handler: one indirect call per request, one allocation per pool. Immutable
/// after construction, so any number of workers call it at once.
template <class Request, class Result = void>
class erased_handler {
public:
    /// Takes `h`, callable as `h(Request&, std::stop_token)` or `h(Request&)`, returning
    /// something convertible to `Result` (anything, for `void`: it is discarded).
    /// Throws: `std::invalid_argument` if `h` is null (an empty `std::function`, a null function
    /// pointer): found at construction, not as a failure of every request or a crash on a worker
    /// thread; `std::bad_alloc`.
    template <class H>
    explicit erased_handler(H h)
        : object_(checked(std::move(h)), [](void* p) noexcept { delete static_cast<H*>(p); }),
          call_([](void* p, Request& r, const std::stop_token& st) -> Result {
              if constexpr (std::is_invocable_v<H&, Request&, std::stop_token>) {
                  return static_cast<Result>((*static_cast<H*>(p))(r, st));
              } else {
                  return static_cast<Result>((*static_cast<H*>(p))(r));
              }
          }) {}

    /// Calls the handler and returns its result; lets its exception through.
    Result operator()(Request& r, const std::stop_token& st) const {
        return call_(object_.get(), r, st);
    }

    /// The handler object, for whoever knows its type (`route_options_source`).
    [[nodiscard]] const void* target() const noexcept { return object_.get(); }

private:
    template <class H>
    static H* checked(H h) {
        if (is_null_callable(h)) {
            throw std::invalid_argument("workerpool: the handler is null (an empty std::function "
                                        "or a null function pointer)");
        }
        return new H(std::move(h));
    }

    std::unique_ptr<void, void (*)(void*) noexcept> object_;
    Result (*call_)(void*, Request&, const std::stop_token&);
};

}  // namespace workerpool::detail
