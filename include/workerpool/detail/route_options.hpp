#pragma once

/// @file
/// How a dispatcher learns, at submit time, the `job_options` that a request's route carries
/// (`handler_map::on(key, handler, job_options)`), and merges them under the request's own.

#include <workerpool/options.hpp>

#include <chrono>
#include <type_traits>

namespace workerpool::detail {

/// True when a handler of type `H` carries options per request: it has
/// `job_options options_for(const Request&) const noexcept` and `bool has_route_options() const
/// noexcept` (as `handler_map` does). A plain handler has neither, and its pool pays nothing.
template <class H, class Request>
concept carries_route_options = requires(const H& h, const Request& r) {
    { h.options_for(r) }
    noexcept->std::same_as<job_options>;
    { h.has_route_options() }
    noexcept->std::same_as<bool>;
};

/// Returns `own` with each field it leaves at "the pool's default" (a zero or negative timeout,
/// zero attempts, the epoch as deadline) taken from `route`: a request's own options override its
/// route's, field by field.
[[nodiscard]] constexpr job_options merge_route_options(const job_options& route,
                                                        const job_options& own) noexcept {
    job_options merged = own;
    if (merged.timeout <= std::chrono::nanoseconds::zero()) {
        merged.timeout = route.timeout;
    }
    if (merged.max_attempts == 0) {
        merged.max_attempts = route.max_attempts;
    }
    if (merged.deadline == std::chrono::steady_clock::time_point{}) {
        merged.deadline = route.deadline;
    }
    return merged;
}

/// What a dispatcher keeps to apply route options at submit time: the handler object and a
/// function that asks it, both null unless the handler carries route options and has some. So a
/// pool whose handler has no routes (or routes without options) tests one null pointer per
/// submit, and nothing more.
/// Thread safety: `apply` only reads the handler, which the pool never changes after
/// construction; any thread.
template <class Request>
class route_options_source {
public:
    /// No route options: `apply` leaves a request's options as they are.
    route_options_source() = default;

    /// Returns a source that asks `*handler` (of type `H`, owned by the pool for its whole life)
    /// when `H` carries route options and has at least one; otherwise an empty source.
    template <class H>
    [[nodiscard]] static route_options_source of(const H* handler) noexcept {
        if constexpr (carries_route_options<H, Request>) {
            if (handler->has_route_options()) {
                return route_options_source(handler, [](const void* h, const Request& r) noexcept {
                    return static_cast<const H*>(h)->options_for(r);
                });
            }
        }
        return {};
    }

    /// Returns whether there are route options to ask for at all.
    [[nodiscard]] bool active() const noexcept { return options_for_ != nullptr; }

    /// Merges the options of `r`'s route under `jo`, the request's own (see
    /// `merge_route_options`); leaves `jo` as it is when there are no route options.
    void apply(const Request& r, job_options& jo) const noexcept {
        if (active()) [[unlikely]] {
            ask(r, jo);
        }
    }

private:
    // Out of line and cold, so that the submit's own code gains only the test (one load, one
    // branch) for a pool without route options.
    [[gnu::cold]] [[gnu::noinline]] void ask(const Request& r, job_options& jo) const noexcept {
        jo = merge_route_options(options_for_(handler_, r), jo);
    }

    using options_for_fn = job_options (*)(const void*, const Request&) noexcept;

    route_options_source(const void* handler, options_for_fn fn) noexcept
        : handler_(handler), options_for_(fn) {}

    const void* handler_ = nullptr;
    options_for_fn options_for_ = nullptr;
};

}  // namespace workerpool::detail
