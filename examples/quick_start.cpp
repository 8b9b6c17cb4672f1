#include <workerpool/workerpool.hpp>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

struct fetch {
    std::string url;
};

int main() {
    using namespace std::chrono_literals;
    workerpool::options<fetch> opts;
    opts.max_workers = 8;         // grows from min_workers (1) under a backlog
    opts.default_timeout = 2s;    // each attempt's stop token is stopped after 2 s
    opts.retry.max_attempts = 3;  // 1 call + 2 retries, with exponential backoff
    opts.on_failure = [](workerpool::failure<fetch>&& f) {
        std::printf("gave up on %s: %s (%s)\n", f.request.url.c_str(),
                    workerpool::to_string(f.reason), workerpool::what(f.error).c_str());
    };
    workerpool::dispatcher<fetch> pool{
        [](fetch& job, const std::stop_token& stop) {
            if (stop.stop_requested()) {  // look at the token in long loops and blocking waits
                throw std::runtime_error("stopped");
            }
            std::printf("fetched %s\n", job.url.c_str());
        },
        opts};

    for (int i = 0; i < 10; ++i) {
        // Blocks while the queue is full; refuses only once shutdown has begun (`closed`).
        const workerpool::submit_status status =
            pool.submit(fetch{"https://example.com/" + std::to_string(i)});
        if (status != workerpool::submit_status::accepted) {
            std::printf("request %d not taken: %s\n", i, workerpool::to_string(status));
        }
    }
    auto report = pool.shutdown(5s);  // drain for up to 5 s, then cancel what still runs
    std::printf("%zu requests handed back\n", report.unprocessed.size());
}
