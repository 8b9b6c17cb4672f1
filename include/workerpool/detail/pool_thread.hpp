#pragma once

/// @file
/// What a pool knows about the thread it runs on: whether it is one of its own (for self-call
/// detection), its name in `top -H` and debuggers, and the per-thread latency sampling count.

#include <workerpool/detail/clock.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace workerpool::detail {

// NOLINTBEGIN(cppcoreguidelines-avoid-non-const-global-variables): per-thread state, written by
// its own thread only; that is what these two are.

/// The pool whose worker or supervisor runs on this thread, if any (for self-call detection).
inline thread_local const void* current_pool = nullptr;

/// Counts down this thread's submits to the next one that is timed for latency statistics.
inline thread_local unsigned latency_countdown = 1;

// NOLINTEND(cppcoreguidelines-avoid-non-const-global-variables)

/// Returns the time now for one call in `every` on this thread (0: never), else 0: the submits
/// timed for the latency figures.
[[nodiscard]] inline std::int64_t sample_now(unsigned every) noexcept {
    if (every == 0 || --latency_countdown != 0) {
        return 0;
    }
    latency_countdown = every;
    return now_ns();
}

/// As `sample_now` for each of `out`'s next submits, with one read of the clock for all of them.
inline void sample_run(unsigned every, std::span<std::int64_t> out) noexcept {
    std::fill(out.begin(), out.end(), 0);
    if (every == 0) {
        return;
    }
    unsigned countdown = latency_countdown;
    std::int64_t now = 0;
    for (std::int64_t& t : out) {
        if (--countdown == 0) {
            countdown = every;
            now = now == 0 ? now_ns() : now;
            t = now;
        }
    }
    latency_countdown = countdown;
}

/// Names this thread "workerpool-<id>" (a worker) or "workerpool-sup" (the supervisor), so that
/// pool threads show in top -H and debuggers. Linux only; elsewhere a no-op.
inline void name_this_thread(std::optional<std::size_t> worker_id) noexcept {
#if defined(__linux__)
    std::array<char, 16> name{};  // at most 15 characters and the terminator
    constexpr std::string_view prefix = "workerpool-";
    std::copy(prefix.begin(), prefix.end(), name.begin());
    char* const rest = name.data() + prefix.size();  // NOLINT(*-pointer-arithmetic): in bounds
    if (worker_id) {
        (void)std::to_chars(rest, name.data() + name.size() - 1,  // NOLINT(*-pointer-arithmetic)
                            *worker_id % 10000);
    } else {
        constexpr std::string_view sup = "sup";
        std::copy(sup.begin(), sup.end(), rest);
    }
    pthread_setname_np(pthread_self(), name.data());
#else
    (void)worker_id;
#endif
}

}  // namespace workerpool::detail
