#pragma once

/// @file
/// `detail::physical_memory()`: the machine's physical memory, the bound past which a queue that
/// initialises every slot could only end with the out-of-memory killer.

#include <cstdint>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace workerpool::detail {

/// Returns the machine's physical memory in bytes, or 0 if it cannot be told.
[[nodiscard]] inline std::uint64_t physical_memory() noexcept {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page_size = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_size > 0) {
        return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size);
    }
#endif
    return 0;
}

}  // namespace workerpool::detail
