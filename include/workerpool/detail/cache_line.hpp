#pragma once

#include <atomic>
#include <cstddef>

namespace workerpool::detail {

/// The line size that the queue and the per-worker counters pad to.
/// Not std::hardware_destructive_interference_size: GCC warns that it is ABI-unstable
/// (-Winterference-size), and 64 is right for every x86-64 and most AArch64 parts.
inline constexpr std::size_t cache_line = 64;

/// An atomic that owns its cache line, so two of them never false-share.
template <class T>
struct alignas(cache_line) padded_atomic {
    std::atomic<T> value{};
};

static_assert(sizeof(padded_atomic<std::size_t>) == cache_line,
              "a padded atomic must fill exactly one cache line");

/// Tells the CPU that this is a spin-wait loop (saves power, frees the sibling hyperthread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

}  // namespace workerpool::detail
