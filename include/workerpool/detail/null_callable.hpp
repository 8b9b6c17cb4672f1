#pragma once

/// @file
/// `detail::is_null_callable`: whether a handler value is a null one (an empty `std::function`, a
/// null function pointer), which the pool and `handler_map` refuse when they are given it.

namespace workerpool::detail {

/// Returns whether `h` compares equal to `nullptr`: an empty `std::function`, a null function or
/// member pointer, or any callable type that defines that comparison. A type without it (a
/// lambda with captures, a function object) is never null.
template <class H>
[[nodiscard]] bool is_null_callable(const H& h) noexcept {
    if constexpr (requires { static_cast<bool>(h == nullptr); }) {
        return static_cast<bool>(h == nullptr);
    } else {
        return false;
    }
}

}  // namespace workerpool::detail
