// One page, four backends: each page asks every backend for its part at once (each backend a
// route with its own timeout and attempts), waits for all of them, and gives up on the rest as
// soon as one fails. Each part is a tracked request: its handle brings back the backend's answer
// or why there is none, and the page's request_group waits for them and cancels them together.
#include <workerpool/workerpool.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

enum class backend { profile, recommendations, inventory, ads };

struct part {
    backend from;
    int page;
    int tries = 0;  // travels with the request's retries
};

// A network call that takes `latency`, or less if the attempt's token is stopped (a timeout, or
// the page gave up): then it throws, as a cancelled call would.
std::string call(part& p, std::chrono::milliseconds latency, const std::stop_token& stop,
                 const char* what) {
    ++p.tries;
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_for(lock, stop, latency, [] { return false; });
    if (stop.stop_requested()) {
        throw std::runtime_error(std::string(what) + " call stopped");
    }
    return std::string(what) + (p.tries > 1 ? " (try " + std::to_string(p.tries) + ")" : "");
}

int main() {
    using namespace std::chrono_literals;
    workerpool::handler_map<part, backend, std::string> routes{
        [](const part& p) { return p.from; }};
    routes
        .on(backend::profile,
            [](part& p, const std::stop_token& stop) { return call(p, 5ms, stop, "profile"); },
            {.timeout = 100ms})
        .on(backend::recommendations,
            [](part& p, const std::stop_token& stop) { return call(p, 40ms, stop, "recs"); },
            {.timeout = 100ms})
        .on(backend::inventory,  // page 2's first call hangs: its 30 ms timeout and a retry
            [](part& p, const std::stop_token& stop) {
                return call(p, p.page == 2 && p.tries == 0 ? 5s : 5ms, stop, "inventory");
            },
            {.timeout = 30ms, .max_attempts = 2})
        .on(backend::ads, [](part& p, const std::stop_token& stop) {
            if (p.page == 3) {
                throw workerpool::permanent_error("ads: HTTP 500");  // not retried
            }
            return call(p, 5ms, stop, "ads");
        });
    workerpool::options<part, std::string> opts;
    opts.min_workers = 4;
    opts.max_workers = 8;
    opts.retry.initial_backoff = 5ms;
    workerpool::dispatcher<part, std::string> pool{std::move(routes), opts};

    for (int page = 1; page <= 4; ++page) {
        workerpool::request_group<part, std::string> parts{pool, {.cancel_on_failure = true}};
        std::vector<workerpool::handle<std::string>> handles;
        for (backend b :
             {backend::profile, backend::recommendations, backend::inventory, backend::ads}) {
            auto [status, h] = parts.submit(part{b, page});
            if (status != workerpool::submit_status::accepted) {
                std::printf("page %d: a part was not taken: %s\n", page,
                            workerpool::to_string(status));
                return 1;
            }
            handles.push_back(std::move(h));
        }
        parts.wait();  // every part has ended; the first failure cancelled the others
        std::string html;
        std::string why;
        for (auto& h : handles) {
            try {
                html += h.get() + "; ";
            } catch (const workerpool::request_failed& e) {
                if (e.state() == workerpool::request_state::failed) {
                    why = e.what();  // the part that failed; the others were cancelled
                }
            }
        }
        if (parts.failed_count() != 0) {
            std::printf("page %d: gave up (%zu parts cancelled): %s\n", page,
                        parts.cancelled_count(), why.c_str());
        } else {
            std::printf("page %d: %s\n", page, html.c_str());
        }
    }
    pool.wait_idle();  // the counters below include every part's end
    const workerpool::stats_snapshot s = pool.stats();
    std::printf("%llu parts fetched, %llu failed (%llu of them cancelled)\n",
                static_cast<unsigned long long>(s.completed),
                static_cast<unsigned long long>(s.failed),
                static_cast<unsigned long long>(s.cancelled));
    return s.completed + s.failed == s.submitted ? 0 : 1;
}
