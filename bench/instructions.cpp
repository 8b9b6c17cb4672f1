// instructions: the program `scripts/count_instructions.py` runs under callgrind to count the
// instructions one no-op request costs the producer's `submit` and the worker. A plain program,
// not a benchmark: it measures nothing itself.
//
//   instructions REQUESTS [block|try] [SHARDS] [timeout|no-timeout]
//
// One worker is held by a gate request while this thread submits REQUESTS (at most 65536, the
// queue's capacity) no-op requests with `submit` (block, the default) or `try_submit` (try), so
// every submit finds a free slot and a busy worker; then the gate opens and the worker runs them
// all. Neither side waits for the other while it is counted. SHARDS: `queue_shards` (default 0:
// the pool's choice). timeout (default): a `default_timeout` (an hour: never reached) and a
// handler that takes its `std::stop_token`; no-timeout: neither.
//
// The script counts instructions inside `submit_blocking` or `submit_trying` (the submit) and
// inside the worker threads (their whole run: the handler included), at two request counts, and
// divides the difference by the difference of the counts, so set-up and shutdown cancel out.

#include <workerpool/workerpool.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stop_token>

namespace {

constexpr std::size_t capacity = std::size_t{1} << 16;

struct job {
    std::uint64_t value = 0;  // 1: the gate request
};

// What the handler and this thread share. A mutex and condition variable rather than atomic
// waits: those spin a timing-dependent while before they sleep, inside the counted worker.
struct state {
    std::mutex mutex;
    std::condition_variable cv;
    bool started = false;  // the worker holds the gate
    bool released = false;
    bool done = false;
    std::uint64_t count = 0;  // the worker thread's only
    std::uint64_t target = 0;
};

void set_and_notify(state& s, bool& flag) {
    {
        const std::lock_guard lock(s.mutex);
        flag = true;
    }
    s.cv.notify_all();
}

void wait_for(state& s, const bool& flag) {
    std::unique_lock lock(s.mutex);
    s.cv.wait(lock, [&flag] { return flag; });
}

// The handler's body, out of line so that its instructions are the same in every build.
[[gnu::noinline]] void body(state* s, const job& j) noexcept {
    if (j.value == 1) {
        set_and_notify(*s, s->started);
        wait_for(*s, s->released);
    }
    if (++s->count == s->target) {
        set_and_notify(*s, s->done);
    }
}

struct with_token {
    state* s;
    void operator()(job& j, const std::stop_token&) const noexcept { body(s, j); }
};

struct without_token {
    state* s;
    void operator()(job& j) const noexcept { body(s, j); }
};

using pool_type = workerpool::dispatcher<job>;

// The submits the script counts (callgrind's --toggle-collect).
[[gnu::noinline]] workerpool::submit_status submit_blocking(pool_type& pool) {
    return pool.submit(job{2});
}
[[gnu::noinline]] workerpool::submit_status submit_trying(pool_type& pool) {
    return pool.try_submit(job{2});
}

template <class Handler>
int run(std::uint64_t n, bool use_try, std::size_t shards, bool timeout) {
    state s;
    s.target = n + 1;
    workerpool::options<job> o;
    o.capacity = capacity;
    o.min_workers = 1;
    o.max_workers = 1;
    o.queue_shards = shards;
    o.spin_before_sleep = std::chrono::nanoseconds(0);
    if (timeout) {
        o.default_timeout = std::chrono::hours(1);
    }
    pool_type pool(Handler{&s}, o);
    if (pool.submit(job{1}) != workerpool::submit_status::accepted) {
        std::fputs("instructions: the gate request was refused\n", stderr);
        return 1;
    }
    wait_for(s, s.started);
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto status = use_try ? submit_trying(pool) : submit_blocking(pool);
        if (status != workerpool::submit_status::accepted) {
            std::fputs("instructions: a submit was refused\n", stderr);
            set_and_notify(s, s.released);
            return 1;
        }
    }
    set_and_notify(s, s.released);
    wait_for(s, s.done);
    (void)pool.shutdown(std::chrono::seconds(10));
    std::printf("ran %llu requests\n", static_cast<unsigned long long>(s.count));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: instructions REQUESTS [block|try] [SHARDS] [timeout|no-timeout]\n";
    if (argc < 2) {
        std::fputs(usage, stderr);
        return 2;
    }
    const std::uint64_t n = std::strtoull(argv[1], nullptr, 10);
    const char* mode = argc > 2 ? argv[2] : "block";
    const std::size_t shards = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0;
    const bool timeout = argc <= 4 || std::strcmp(argv[4], "no-timeout") != 0;
    if (n == 0 || n > capacity ||
        (std::strcmp(mode, "block") != 0 && std::strcmp(mode, "try") != 0)) {
        std::fputs(usage, stderr);
        std::fputs("REQUESTS: 1 to 65536 (the queue holds them all while the worker waits)\n",
                   stderr);
        return 2;
    }
    const bool use_try = std::strcmp(mode, "try") == 0;
    return timeout ? run<with_token>(n, use_try, shards, true)
                   : run<without_token>(n, use_try, shards, false);
}
