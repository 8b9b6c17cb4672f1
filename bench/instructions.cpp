// instructions: the program `scripts/count_instructions.py` runs under callgrind to count the
// instructions one no-op request costs the producer's `submit` and the worker. A plain program,
// not a benchmark: it measures nothing itself.
//
//   instructions REQUESTS [block|try|wake] [SHARDS] [timeout|no-timeout]
//
// block / try (default block): one worker is held by a gate request while this thread submits
// REQUESTS no-op requests (with `submit` or `try_submit`), so every submit finds a free slot and
// a busy worker; then the gate opens and the worker runs them all. Neither side ever waits.
// wake: one request at a time into a pool whose worker sleeps between them (the wake-up path).
// SHARDS: `queue_shards` (default 0: the pool's choice). timeout (default): `default_timeout`
// 10 s and a handler that takes its `std::stop_token`; no-timeout: neither.
//
// The script counts instructions inside `submit_blocking` or `submit_trying` (the submit) and
// inside the worker threads (their whole run: the handler included), at two request counts, and
// divides the difference by the difference of the counts, so set-up and shutdown cancel out.

#include <workerpool/workerpool.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stop_token>

namespace {

struct job {
    std::uint64_t value = 0;  // 1: the gate request
};

struct state {
    std::atomic<int> started{0};
    std::atomic<int> release{0};
    std::atomic<int> done{0};
    std::atomic<std::uint64_t> progress{0};
    std::uint64_t count = 0;  // the worker thread's only
    std::uint64_t target = 0;
    bool report_progress = false;
};

// The handler's body, out of line so that its instructions are the same in every build.
[[gnu::noinline]] void body(state* s, const job& j) noexcept {
    if (j.value == 1) {
        s->started.store(1);
        s->started.notify_one();
        while (s->release.load() == 0) {
            s->release.wait(0);
        }
    }
    ++s->count;
    if (s->report_progress) {
        s->progress.store(s->count);
        s->progress.notify_one();
    }
    if (s->count == s->target) {
        s->done.store(1);
        s->done.notify_one();
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

void require_accepted(workerpool::submit_status s) {
    if (s != workerpool::submit_status::accepted) {
        std::fputs("instructions: a submit was refused\n", stderr);
        std::exit(1);
    }
}

template <class Handler>
void run(std::uint64_t n, const char* mode, std::size_t shards, bool timeout) {
    state s;
    s.target = n + 1;
    workerpool::options<job> o;
    o.capacity = std::size_t{1} << 16;
    o.min_workers = 1;
    o.max_workers = 1;
    o.queue_shards = shards;
    o.spin_before_sleep = std::chrono::nanoseconds(0);
    if (timeout) {
        o.default_timeout = std::chrono::seconds(10);
    }
    pool_type pool(Handler{&s}, o);
    if (std::strcmp(mode, "wake") == 0) {
        s.report_progress = true;
        for (std::uint64_t i = 1; i <= n + 1; ++i) {
            require_accepted(submit_blocking(pool));

            for (std::uint64_t p = 0; (p = s.progress.load()) < i;) {
                s.progress.wait(p);
            }
        }
    } else {
        const bool use_try = std::strcmp(mode, "try") == 0;
        require_accepted(pool.submit(job{1}));
        while (s.started.load() == 0) {
            s.started.wait(0);
        }
        for (std::uint64_t i = 0; i < n; ++i) {
            require_accepted(use_try ? submit_trying(pool) : submit_blocking(pool));
        }
        s.release.store(1);
        s.release.notify_one();
        while (s.done.load() == 0) {
            s.done.wait(0);
        }
    }
    (void)pool.shutdown(std::chrono::seconds(10));
    std::printf("ran %llu requests\n", static_cast<unsigned long long>(s.count));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fputs("usage: instructions REQUESTS [block|try|wake] [SHARDS] [timeout|no-timeout]\n",
                   stderr);
        return 2;
    }
    const std::uint64_t n = std::strtoull(argv[1], nullptr, 10);
    const char* mode = argc > 2 ? argv[2] : "block";
    const std::size_t shards = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0;
    const bool timeout = argc <= 4 || std::strcmp(argv[4], "no-timeout") != 0;
    if (std::strcmp(mode, "block") != 0 && std::strcmp(mode, "try") != 0 &&
        std::strcmp(mode, "wake") != 0) {
        std::fputs("instructions: the mode is block, try or wake\n", stderr);
        return 2;
    }
    if (timeout) {
        run<with_token>(n, mode, shards, true);
    } else {
        run<without_token>(n, mode, shards, false);
    }
    return 0;
}
