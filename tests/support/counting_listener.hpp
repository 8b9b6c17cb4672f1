// A cancel_listener that counts the cancels it hears of (tests of the slot's watch and of the
// scheduler's purge, without a pool). Single-threaded use only.
#pragma once

#include <workerpool/detail/completion.hpp>

namespace workerpool::test {

struct counting_listener final : workerpool::detail::cancel_listener {
    int calls = 0;
    void cancelled() noexcept override { ++calls; }
};

}  // namespace workerpool::test
