// Timeouts, retries and a stuck worker, on std::stop_token.
//
// - "flaky" requests throw now and then and are retried with exponential backoff;
// - "slow" requests block on a condition variable; when their deadline passes the pool stops their
//   token, and std::condition_variable_any::wait(lock, token, pred) returns at once;
// - "legacy" requests call code that never looks at its token: the pool declares the worker
//   stuck, starts a replacement so the queue keeps moving, and takes the worker back when the
//   call finally returns.
// Run: ./timeouts_and_retries
#include <workerpool/workerpool.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <thread>

namespace {

using namespace std::chrono_literals;

enum class kind { flaky, slow, legacy };

struct request {
    kind type;
    int id;
    int calls = 0;  // the request travels with its retries, so it can keep state across attempts
};

// A resource that never becomes ready: waiting on it only ends through the stop token.
std::mutex never_mutex;
std::condition_variable_any never_ready;

}  // namespace

int main() {
    const auto t0 = std::chrono::steady_clock::now();
    auto ms = [&t0] {
        return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - t0)
                                          .count());
    };
    std::mutex out;

    workerpool::options<request> opts;
    opts.min_workers = 2;
    opts.max_workers = 2;
    opts.default_timeout = 50ms;
    opts.stuck_grace = 100ms;
    opts.stuck_allowance = 1;
    opts.retry.max_attempts = 4;
    opts.retry.initial_backoff = 5ms;
    opts.retry.multiplier = 2.0;
    opts.retry.max_backoff = 40ms;
    opts.on_failure = [&](workerpool::failure<request>&& f) {
        std::lock_guard lock(out);
        std::printf("%5lld ms  dead letter: request %d, %s after %u attempt(s): %s\n", ms(),
                    f.request.id, workerpool::to_string(f.reason), f.attempts,
                    workerpool::what(f.error).c_str());
    };
    opts.on_event = [&](const workerpool::event& e) {
        using workerpool::event_kind;
        if (e.kind == event_kind::worker_stuck || e.kind == event_kind::worker_recovered ||
            e.kind == event_kind::scale_up || e.kind == event_kind::scale_down ||
            e.kind == event_kind::attempt_timed_out) {
            std::lock_guard lock(out);
            std::printf("%5lld ms  event %-17s workers %zu -> %zu (%s)\n", ms(),
                        workerpool::to_string(e.kind), e.workers_before, e.workers_after, e.reason);
        }
    };

    workerpool::dispatcher<request> pool{
        [&](request& r, const std::stop_token& st) {
            switch (r.type) {
            case kind::flaky:
                // Every third request fails on its first two calls, then succeeds.
                if (r.id % 3 == 0 && ++r.calls < 3) {
                    throw std::runtime_error("connection reset");
                }
                return;
            case kind::slow: {
                std::unique_lock lock(never_mutex);
                // Returns false when the token is stopped: the deadline passed.
                if (!never_ready.wait(lock, st, [] { return false; })) {
                    throw std::runtime_error("gave up waiting");
                }
                return;
            }
            case kind::legacy:
                std::this_thread::sleep_for(400ms);  // ignores its token: this worker gets stuck
                return;
            }
        },
        opts};

    (void)pool.submit(request{kind::legacy, 100});
    (void)pool.submit(request{kind::slow, 200},
                      workerpool::job_options{.timeout = 30ms, .max_attempts = 2});
    for (int i = 0; i < 12; ++i) {
        (void)pool.submit(request{kind::flaky, i});
    }

    pool.wait_idle();  // every request has ended: completed, or in the dead-letter sink
    const auto report = pool.shutdown(1s);
    const auto s = pool.stats();
    std::printf("%5lld ms  done: completed %llu, failed %llu, retried %llu, timed out %llu, stuck "
                "%llu time(s), unprocessed %zu\n",
                ms(), static_cast<unsigned long long>(s.completed),
                static_cast<unsigned long long>(s.failed),
                static_cast<unsigned long long>(s.retried),
                static_cast<unsigned long long>(s.timed_out),
                static_cast<unsigned long long>(s.stuck_total), report.unprocessed.size());
    return s.completed + s.failed == 14 ? 0 : 1;
}
