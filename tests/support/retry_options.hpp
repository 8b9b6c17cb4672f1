// The pool the retry tests (retries, retry_after) start from: one worker, room for 64 requests,
// `attempts` attempts per request, and no backoff or jitter of its own, so that what a test sets
// is the only wait between attempts.
#pragma once

#include <workerpool/options.hpp>
#include <workerpool/retry.hpp>

#include <chrono>

namespace workerpool::test {

inline workerpool::options<int> retry_options(unsigned attempts) {
    using namespace std::chrono_literals;
    workerpool::options<int> o;
    o.capacity = 64;
    o.min_workers = 1;
    o.max_workers = 1;
    o.scale_interval = 10ms;
    o.retry.max_attempts = attempts;
    o.retry.initial_backoff = 0ns;
    o.retry.jitter = workerpool::jitter_mode::none;
    return o;
}

}  // namespace workerpool::test
