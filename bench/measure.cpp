// Measurements for the record, not tests (Catch2 test cases, so that one can be picked by name or
// tag; ctest never runs them):
//   - timeout precision: lateness between an attempt's deadline and its cooperative handler
//     seeing the stop;
//   - time from a burst to max_workers at default options;
//   - time from a stuck attempt's deadline to its replacement running queued work, at defaults;
//   - idle CPU of a pool at min_workers;
//   - supervisor CPU with retries, timeouts and a stuck handler.
// Run:  build/bench/bench/measure            (every measurement; see bench/README.md)

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using workerpool::dispatcher;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::gate;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               clock_type::now().time_since_epoch())
        .count();
}

struct summary {
    double median = 0, p90 = 0, p99 = 0, max = 0, min = 0;
};

summary summarise(std::vector<double> v) {
    summary s;
    if (v.empty()) {
        return s;
    }
    std::sort(v.begin(), v.end());
    auto at = [&v](double q) {
        return v[std::min(v.size() - 1,
                          static_cast<std::size_t>(q * static_cast<double>(v.size())))];
    };
    s.min = v.front();
    s.median = at(0.5);
    s.p90 = at(0.9);
    s.p99 = at(0.99);
    s.max = v.back();
    return s;
}

void print(const char* what, const summary& s, const char* unit) {
    std::printf("[measure] %s: min %.3f, median %.3f, p90 %.3f, p99 %.3f, max %.3f %s\n", what,
                s.min, s.median, s.p90, s.p99, s.max, unit);
    std::fflush(stdout);
}

}  // namespace

TEST_CASE("measure: timeout precision of a cooperative handler", "[measure][timeout]") {
    for (const auto timeout : {20ms, 100ms}) {
        constexpr int samples = 200;
        std::vector<std::int64_t> start(samples), seen(samples);
        std::atomic<int> done{0};
        workerpool::options<int> o;  // defaults, but for the timeout and enough workers
        o.default_timeout = timeout;
        o.min_workers = 4;
        o.max_workers = 4;
        dispatcher<int> pool(
            [&](int& i, std::stop_token st) {
                const auto k = static_cast<std::size_t>(i);
                start[k] = now_ns();
                std::mutex m;
                std::condition_variable cv;
                bool stopped = false;
                std::stop_callback cb(st, [&] {
                    seen[k] = now_ns();  // the moment the stop reaches the handler
                    std::lock_guard lock(m);
                    stopped = true;
                    cv.notify_one();
                });
                std::unique_lock lock(m);
                cv.wait_for(lock, 10s, [&] { return stopped; });
                done.fetch_add(1);
                throw std::runtime_error("timed out");
            },
            o);
        for (int i = 0; i < samples; ++i) {
            REQUIRE(pool.submit(int{i}) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return done.load() == samples; }, 120s));
        (void)pool.shutdown(10s);
        std::vector<double> late_ms;
        int early = 0;
        for (int i = 0; i < samples; ++i) {
            const auto k = static_cast<std::size_t>(i);
            const std::int64_t deadline = start[k] + std::chrono::nanoseconds(timeout).count();
            early += seen[k] < deadline ? 1 : 0;
            late_ms.push_back(static_cast<double>(seen[k] - deadline) / 1e6);
        }
        char what[96];
        std::snprintf(what, sizeof what, "lateness after a %lld ms deadline (%d samples, %d early)",
                      static_cast<long long>(timeout.count()), samples, early);
        print(what, summarise(late_ms), "ms");
        CHECK(pool.stats().timed_out == static_cast<std::uint64_t>(samples));
    }
}

TEST_CASE("measure: time from a burst to max_workers", "[measure][scaling]") {
    for (const std::size_t max_workers : {workerpool::default_max_workers(), std::size_t{8}}) {
        std::vector<double> ms;
        for (int round = 0; round < 20; ++round) {
            gate hold;
            workerpool::options<int> o;  // default scale_interval, scale_up_depth, min_workers
            o.max_workers = max_workers;
            dispatcher<int> pool([&](int&) { hold.wait(); }, o);
            // Land at a random point of the scaler's period, as a real burst would.
            std::this_thread::sleep_for(std::chrono::milliseconds(round * 7 % 50));
            const auto t0 = clock_type::now();
            for (int i = 0; i < 1000; ++i) {
                REQUIRE(pool.try_submit(int{i}) == submit_status::accepted);
            }
            REQUIRE(eventually([&] { return pool.worker_count() == max_workers; }, 10s));
            ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
            hold.open();
            (void)pool.shutdown(10s);
        }
        char what[96];
        std::snprintf(what, sizeof what, "burst of 1000 to max_workers = %zu (20 rounds)",
                      max_workers);
        print(what, summarise(ms), "ms");
    }
}

TEST_CASE("measure: stuck deadline to replacement running queued work", "[measure][stuck]") {
    std::vector<double> ms;
    for (int round = 0; round < 15; ++round) {
        gate release;
        std::atomic<std::int64_t> stuck_start{0};
        std::atomic<std::int64_t> probe_start{0};
        workerpool::options<int> o;  // default stuck_grace, scale_interval, stuck_allowance
        o.min_workers = 1;
        o.max_workers = 1;
        o.default_timeout = 20ms;
        dispatcher<int> pool(
            [&](int& id) {
                if (id == 0) {
                    stuck_start = now_ns();
                    release.wait();
                } else {
                    probe_start = now_ns();
                }
            },
            o);
        std::this_thread::sleep_for(std::chrono::milliseconds(round * 7 % 50));
        REQUIRE(pool.try_submit(0) == submit_status::accepted);
        REQUIRE(eventually([&] { return stuck_start.load() != 0; }));
        REQUIRE(pool.try_submit(1) == submit_status::accepted);
        REQUIRE(eventually([&] { return probe_start.load() != 0; }, 10s));
        release.open();
        (void)pool.shutdown(10s);
        ms.push_back(static_cast<double>(probe_start.load() - (stuck_start.load() + 20'000'000)) /
                     1e6);
    }
    print("stuck attempt's deadline -> replacement runs the next request (15 rounds, defaults)",
          summarise(ms), "ms");
}

namespace {

// CPU seconds used so far by this process's threads named "workerpool-..." (the pools' workers
// and supervisors; Linux: the first field of /proc/self/task/<tid>/schedstat, in nanoseconds).
double pool_threads_cpu_seconds() {
    double total = 0;
#if defined(__linux__)
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(entry.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("workerpool-", 0) != 0) {
            continue;
        }
        std::ifstream schedstat(entry.path() / "schedstat");
        double on_cpu_ns = 0;
        if (schedstat >> on_cpu_ns) {
            total += on_cpu_ns / 1e9;
        }
    }
#endif
    return total;
}

}  // namespace

TEST_CASE("measure: idle CPU of a pool at min_workers", "[measure][idle]") {
    for (const auto interval : {std::chrono::milliseconds(50), std::chrono::milliseconds(5)}) {
        workerpool::options<int> o;  // defaults: min_workers 1
        o.scale_interval = interval;
        o.default_timeout = 10s;
        dispatcher<int> pool([](int&) {}, o);
        for (int i = 0; i < 1000; ++i) {
            REQUIRE(pool.submit(int{i}) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return pool.stats().completed == 1000u; }));
        // Settle: past the post-burst spinning, and back at min_workers (the policy's cool-down).
        (void)eventually(
            [&] {
                const std::uint64_t before = pool.stats().supervisor_wakeups;
                std::this_thread::sleep_for(200ms);
                return pool.worker_count() == o.min_workers &&
                       pool.stats().supervisor_wakeups == before;
            },
            30s);
        const std::uint64_t wakeups0 = pool.stats().supervisor_wakeups;
        const double cpu0 = pool_threads_cpu_seconds();
        const auto t0 = clock_type::now();
        std::this_thread::sleep_for(5s);  // time is what is measured
        const double cpu = pool_threads_cpu_seconds() - cpu0;
        const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
        std::printf(
            "[measure] idle pool (scale_interval %lld ms, %zu workers): its threads used %.6f s "
            "CPU in %.3f s = %.4f %% of one core; %llu supervisor wake-ups\n",
            static_cast<long long>(interval.count()), pool.worker_count(), cpu, wall,
            100.0 * cpu / wall,
            static_cast<unsigned long long>(pool.stats().supervisor_wakeups - wakeups0));
        std::fflush(stdout);
    }
}

namespace {

// CPU seconds used so far by this process's thread named `name` (Linux: the first field of
// /proc/self/task/<tid>/schedstat, in nanoseconds); -1 if there is none or it cannot be told.
double thread_cpu_seconds(const std::string& name) {
#if defined(__linux__)
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(entry.path() / "comm");
        std::string thread_name;
        std::getline(comm, thread_name);
        if (thread_name != name) {
            continue;
        }
        std::ifstream schedstat(entry.path() / "schedstat");
        double on_cpu_ns = -1;
        if (schedstat >> on_cpu_ns) {
            return on_cpu_ns / 1e9;
        }
    }
#else
    (void)name;
#endif
    return -1;
}

}  // namespace

TEST_CASE("measure: supervisor CPU with retries, timeouts and a stuck handler",
          "[measure][supervisor]") {
    // Issue 14's scenarios: the supervisor must stay under 3 % of one core in each.
    struct scenario {
        const char* name;
        std::size_t capacity;
        int requests;
        int every;     // every `every`-th request fails (or overruns) its first attempt
        bool overrun;  // fail by overrunning the timeout rather than by throwing
        std::chrono::nanoseconds timeout;
    };
    const scenario scenarios[] = {
        {"retries, capacity 64, every 10th fails once", 64, 3000, 10, false, 0ns},
        {"retries, capacity 32, every 5th fails once", 32, 1500, 5, false, 0ns},
        {"timeouts 20 ms, every 5th overruns once", 32, 1500, 5, true, 20ms},
        {"timeouts 20 ms, none overruns", 32, 1500, 0, false, 20ms},
    };
    for (const scenario& sc : scenarios) {
        workerpool::options<int> o;
        o.capacity = sc.capacity;
        o.min_workers = 2;
        o.max_workers = 2;
        o.default_timeout = sc.timeout;
        o.retry.max_attempts = 2;
        o.retry.initial_backoff = 1ms;
        o.retry.jitter = workerpool::jitter_mode::none;
        std::vector<std::atomic<bool>> first(static_cast<std::size_t>(sc.requests));
        dispatcher<int> pool(
            [&](int& id, const std::stop_token& st) {
                const bool fails = sc.every != 0 && id % sc.every == 0 &&
                                   !first[static_cast<std::size_t>(id)].exchange(true);
                if (fails && sc.overrun) {
                    std::mutex m;
                    std::condition_variable_any cv;
                    std::unique_lock lock(m);
                    cv.wait(lock, st, [] { return false; });
                    throw std::runtime_error("stopped");
                }
                std::this_thread::sleep_for(1ms);
                if (fails) {
                    throw std::runtime_error("fails once");
                }
            },
            o);
        // The supervisor names itself once it runs: wait for that before the first reading.
        (void)eventually([] { return thread_cpu_seconds("workerpool-sup") >= 0; });
        const double cpu0 = thread_cpu_seconds("workerpool-sup");
        const auto t0 = clock_type::now();
        for (int i = 0; i < sc.requests; ++i) {
            (void)pool.submit(int{i});
        }
        pool.wait_idle();
        const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
        const double cpu = thread_cpu_seconds("workerpool-sup") - cpu0;
        const auto s = pool.stats();
        std::printf("[measure] supervisor, %s: %.3f s CPU in %.2f s = %.2f %% of a core, "
                    "%llu wake-ups (%llu retries, %llu timeouts)\n",
                    sc.name, cpu, wall, 100.0 * cpu / wall,
                    static_cast<unsigned long long>(s.supervisor_wakeups),
                    static_cast<unsigned long long>(s.retried),
                    static_cast<unsigned long long>(s.timed_out));
    }
    {
        // A handler that ignores its token for 3 s, with a 20 ms timeout and stuck_grace.
        workerpool::options<int> o;
        o.min_workers = 1;
        o.max_workers = 1;
        o.default_timeout = 20ms;
        o.stuck_grace = 20ms;
        gate release;
        dispatcher<int> pool(
            [&](int& id) {
                if (id == 0) {
                    release.wait();
                }
            },
            o);
        // The supervisor names itself once it runs: wait for that before the first reading.
        (void)eventually([] { return thread_cpu_seconds("workerpool-sup") >= 0; });
        const double cpu0 = thread_cpu_seconds("workerpool-sup");
        const auto t0 = clock_type::now();
        (void)pool.try_submit(0);
        (void)eventually([&] { return clock_type::now() - t0 >= 3s; }, 10s);
        const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
        const double cpu = thread_cpu_seconds("workerpool-sup") - cpu0;
        release.open();
        std::printf("[measure] supervisor, a handler stuck for 3 s: %.3f s CPU in %.2f s = %.2f %% "
                    "of a core, %llu wake-ups\n",
                    cpu, wall, 100.0 * cpu / wall,
                    static_cast<unsigned long long>(pool.stats().supervisor_wakeups));
    }
}
