// A tiny program that uses workerpool the way an application does. tests/package/run.sh builds it,
// as my_app, against the library brought in by the README's add_subdirectory, FetchContent and
// find_package blocks.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/version.hpp>
#include <workerpool/workerpool.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>

static_assert(workerpool::version_major == WORKERPOOL_VERSION_MAJOR);
static_assert(WORKERPOOL_VERSION >= 100, "this consumer was written for workerpool 0.1");

int main() {
    workerpool::bounded_queue<int> queue{4};
    if (queue.try_push(1) != workerpool::submit_status::accepted) {
        return 1;
    }
    int out = 0;
    if (!queue.try_pop(out) || out != 1) {
        return 2;
    }

    std::atomic<int> handled{0};
    {
        workerpool::dispatcher<int> pool{
            [&handled](int& r) { handled.fetch_add(r, std::memory_order_relaxed); }};
        if (pool.try_submit(1) != workerpool::submit_status::accepted) {
            return 3;
        }
        auto report = pool.shutdown(std::chrono::seconds(1));
        // Every accepted request ends exactly once: handled, or handed back by shutdown.
        const auto finished = static_cast<std::size_t>(handled.load(std::memory_order_relaxed));
        if (finished + report.unprocessed.size() != 1) {
            return 4;
        }
    }

    std::printf("workerpool %s: consumer ok\n", workerpool::version_string);
    return 0;
}
