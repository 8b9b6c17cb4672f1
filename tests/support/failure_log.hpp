// Collects what a pool hands to on_failure, for tests to inspect, and reads the exceptions in it.
// The one failure log of the tests (dispatcher_failures, dispatcher_shutdown, retries, timeouts).
#pragma once

#include <workerpool/status.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
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

// The message of the exception in `p`: its what(), or "<non-std exception>" for any other type.
// Pre: `p` is not null.
inline std::string message_of(const std::exception_ptr& p) {
    try {
        std::rethrow_exception(p);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "<non-std exception>";
    }
}

// Whether `p` holds an exception of type `E` (or of a type derived from it).
template <class E>
bool holds(const std::exception_ptr& p) {
    if (!p) {
        return false;
    }
    try {
        std::rethrow_exception(p);
    } catch (const E&) {
        return true;
    } catch (...) {
        return false;
    }
}

}  // namespace workerpool::test
