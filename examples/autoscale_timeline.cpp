// The scaler at work: a quiet pool, a burst of I/O-bound requests, the worker count rising to
// follow the backlog, then falling back to the minimum once the load is gone. Prints a timeline
// (one line per sample) and every scale event as it happens.
// Run: ./autoscale_timeline
#include <workerpool/workerpool.hpp>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <stop_token>
#include <thread>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct request {
    int id;
};

long long ms_since(clock_type::time_point t0, clock_type::time_point t) {
    return static_cast<long long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(t - t0).count());
}

}  // namespace

int main() {
    const auto t0 = clock_type::now();
    std::mutex out;  // the timeline and the events print from different threads

    workerpool::options<request> opts;
    opts.capacity = 4096;
    opts.min_workers = 1;
    opts.max_workers = 12;
    opts.scale_up_depth = 50;
    opts.scale_interval = 20ms;
    opts.scale_down_cooldown = 200ms;
    opts.idle_keep_alive = 400ms;
    opts.on_event = [&](const workerpool::event& e) {
        if (e.kind == workerpool::event_kind::scale_up ||
            e.kind == workerpool::event_kind::scale_down) {
            std::lock_guard lock(out);
            std::printf("%6lld ms   event %-10s %2zu -> %2zu workers (%s, depth %zu)\n",
                        ms_since(t0, e.when), workerpool::to_string(e.kind), e.workers_before,
                        e.workers_after, e.reason, e.queue_depth);
        }
    };

    // An I/O-bound handler: 2 ms of waiting (a remote call) per request.
    workerpool::dispatcher<request> pool{
        [](request&, const std::stop_token&) { std::this_thread::sleep_for(2ms); }, opts};

    auto sample = [&] {
        const auto s = pool.stats();
        std::lock_guard lock(out);
        std::printf("%6lld ms   depth %4zu   workers %2zu   busy %2zu   completed %5llu\n",
                    ms_since(t0, clock_type::now()), s.queue_depth, s.workers, s.in_flight,
                    static_cast<unsigned long long>(s.completed));
    };

    std::printf("quiet: one worker\n");
    for (int i = 0; i < 3; ++i) {
        sample();
        std::this_thread::sleep_for(50ms);
    }
    std::printf("burst: 3000 requests at once\n");
    for (int i = 0; i < 3000; ++i) {
        if (pool.submit(request{i}) != workerpool::submit_status::accepted) {
            return 1;
        }
    }
    while (pool.stats().queue_depth > 0 || pool.stats().in_flight > 0) {
        sample();
        std::this_thread::sleep_for(50ms);
    }
    std::printf("quiet again: watch the pool shrink back\n");
    while (pool.worker_count() > opts.min_workers && ms_since(t0, clock_type::now()) < 10'000) {
        sample();
        std::this_thread::sleep_for(100ms);
    }
    sample();
    const auto report = pool.shutdown(1s);
    const auto s = pool.stats();
    std::printf("done: %llu completed, peak %zu workers, %llu scale-ups, %llu scale-downs, %zu "
                "unprocessed\n",
                static_cast<unsigned long long>(s.completed), s.peak_workers,
                static_cast<unsigned long long>(s.scale_ups),
                static_cast<unsigned long long>(s.scale_downs), report.unprocessed.size());
    return s.completed == 3000 ? 0 : 1;
}
