// Collects what a pool hands to on_failure, for tests to inspect. Shared by the
// dispatcher_failures, retries and timeouts tests.
#pragma once

#include <workerpool/status.hpp>

#include <cstddef>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace workerpool::test {

// `sink()` is the on_failure callback. Read `items` directly only once the pool is quiet (after
// `eventually(size() == n)` with nothing more to fail, or after shutdown); `size()` and `take()`
// lock.
template <class Request>
struct failure_log {
    std::mutex mutex;
    std::vector<failure<Request>> items;  // guarded by mutex while the pool may still write

    std::function<void(failure<Request>&&)> sink() {
        return [this](failure<Request>&& f) {
            std::lock_guard lock(mutex);
            items.push_back(std::move(f));
        };
    }
    std::size_t size() {
        std::lock_guard lock(mutex);
        return items.size();
    }
    // Moves the failures out.
    std::vector<failure<Request>> take() {
        std::lock_guard lock(mutex);
        return std::move(items);
    }
};

}  // namespace workerpool::test
