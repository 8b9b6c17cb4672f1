// Measurements for the record, not assertions (hidden tag [.measure]; ctest does not run them):
//   - timeout precision: lateness between an attempt's deadline and its cooperative handler
//     seeing the stop;
//   - time from a burst to max_workers at default options;
//   - time from a stuck attempt's deadline to its replacement running queued work, at defaults;
//   - idle CPU of a pool at min_workers.
// Run:  <build>/tests/workerpool_stress_tests "[.measure]" -s   (see tests/stress/README.md)

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <stop_token>
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

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

TEST_CASE("measure: timeout precision of a cooperative handler", "[.measure][timeout]") {
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

TEST_CASE("measure: time from a burst to max_workers", "[.measure][scaling]") {
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

TEST_CASE("measure: stuck deadline to replacement running queued work", "[.measure][stuck]") {
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

TEST_CASE("measure: idle CPU of a pool at min_workers", "[.measure][idle]") {
    for (const auto interval : {std::chrono::milliseconds(50), std::chrono::milliseconds(5)}) {
        workerpool::options<int> o;  // defaults: min_workers 1
        o.scale_interval = interval;
        o.default_timeout = 10s;
        dispatcher<int> pool([](int&) {}, o);
        for (int i = 0; i < 1000; ++i) {
            REQUIRE(pool.submit(int{i}) == submit_status::accepted);
        }
        REQUIRE(eventually([&] { return pool.stats().completed == 1000u; }));
        std::this_thread::sleep_for(200ms);  // past the post-burst spinning
        const double cpu0 = cpu_seconds();
        const auto t0 = clock_type::now();
        std::this_thread::sleep_for(2s);  // time is what is measured
        const double cpu = cpu_seconds() - cpu0;
        const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
        std::printf(
            "[measure] idle pool (scale_interval %lld ms, %zu workers): %.4f s CPU in %.3f s "
            "= %.3f %% of one core\n",
            static_cast<long long>(interval.count()), pool.worker_count(), cpu, wall,
            100.0 * cpu / wall);
        std::fflush(stdout);
    }
}
