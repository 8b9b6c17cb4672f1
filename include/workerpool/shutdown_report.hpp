#pragma once

/// @file
/// `shutdown_report<Request>`: what `dispatcher::shutdown` hands back.

#include <cstddef>
#include <vector>

namespace workerpool {

/// What `dispatcher::shutdown` hands back.
template <class Request>
struct shutdown_report {
    /// Every request that was accepted but never finished: still queued when the drain ended,
    /// waiting out a retry backoff, or whose attempt failed on its own during shutdown with
    /// attempts left. An attempt that throws after shutdown stopped its token is not here: it
    /// goes to `on_failure` as `cancelled`, attempts left or not. So a caller who wants to keep
    /// unfinished work collects both. Moved out of the pool; the caller owns them.
    std::vector<Request> unprocessed;
    /// True when the queue emptied and every running handler returned within the grace, so that
    /// no attempt was cancelled and nothing queued was handed back. Workers that were only on
    /// their way out when a short grace ended do not make it false (`shutdown(0)` on a quiet pool
    /// drained). Requests waiting out a retry backoff are handed back at once and do not make it
    /// false either: `unprocessed` may be non-empty when `drained` is true.
    bool drained = false;
    /// Workers whose handler ignored its stopped token and was still running when shutdown
    /// returned. The destructor waits for them (it never detaches a thread).
    std::size_t stuck_workers = 0;
    /// True when called from one of the pool's own threads: intake is closed, and the rest of the
    /// shutdown is left to a later call from another thread or to the destructor.
    bool deferred = false;
};

}  // namespace workerpool
