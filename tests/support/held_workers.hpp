// Helpers for tests that hold workers inside their handlers (with test_util.hpp's `gate`) and
// watch blocked submitters, and the move-only request type they submit. Shared by the
// dispatcher_*, regressions and misbehaviour tests.
#pragma once

#include <workerpool/options.hpp>
#include <workerpool/status.hpp>

#include "support/test_util.hpp"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <atomic>
#include <chrono>
#include <cstddef>
#include <fstream>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

namespace workerpool::test {

// A move-only request: `payload` travels with it (and is null once it was moved from), so a test
// can tell a request handed back whole, or left untouched by a refused submit, from one the pool
// took.
struct job {
    int id = 0;
    std::unique_ptr<int> payload;
    explicit job(int i) : id(i), payload(std::make_unique<int>(i * 10)) {}
};

// Whether `j` still holds what `job(id)` gave it (it was not moved from).
inline bool untouched(const job& j, int id) {
    return j.id == id && j.payload != nullptr && *j.payload == id * 10;
}

// A pool of exactly `workers` workers and `capacity` slots, whose destructor does not wait out a
// grace (a failing test must not wait one per pool).
template <class Request = job, class Result = void>
workerpool::options<Request, Result> held_options(std::size_t capacity, std::size_t workers) {
    workerpool::options<Request, Result> o;
    o.capacity = capacity;
    o.min_workers = workers;
    o.max_workers = workers;
    o.destructor_grace = std::chrono::nanoseconds(0);
    return o;
}

// Records the ids that handlers saw, in order.
class recorder {
public:
    void add(int id) {
        std::lock_guard lock(mutex_);
        ids_.push_back(id);
    }
    std::vector<int> ids() {
        std::lock_guard lock(mutex_);
        return ids_;
    }
    std::size_t size() {
        std::lock_guard lock(mutex_);
        return ids_.size();
    }

private:
    std::mutex mutex_;
    std::vector<int> ids_;  // guarded by mutex_
};

// The calling thread's kernel id (Linux), or 1 elsewhere.
inline long this_tid() {
#if defined(__linux__)
    return ::syscall(SYS_gettid);
#else
    return 1;
#endif
}

// Returns whether thread `tid` of this process is asleep in the kernel (state S): for a submitter
// thread, that it is blocked waiting for a free slot. Reads /proc, so it never disturbs the
// thread. Elsewhere it cannot tell and answers true, which only makes the tests weaker.
inline bool is_asleep(long tid) {
#if defined(__linux__)
    std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'S';
#else
    (void)tid;
    return true;
#endif
}

// Jobs `first`, `first + 1`, ..., `count` of them.
inline std::vector<job> jobs(int first, int count) {
    std::vector<job> v;
    v.reserve(static_cast<std::size_t>(count));
    for (int i = first; i < first + count; ++i) {
        v.emplace_back(i);
    }
    return v;
}

// How many of `v`, from index `from` on, are still whole (see `untouched`).
inline int whole_from(const std::vector<job>& v, std::size_t from) {
    int n = 0;
    for (std::size_t i = from; i < v.size(); ++i) {
        n += untouched(v[i], v[i].id) ? 1 : 0;
    }
    return n;
}

// A handler that waits at `hold` for a pass (throwing stopped_by_token if its token is stopped
// first), then records its job's id in `seen`.
inline auto held_handler(gate& hold, recorder& seen) {
    return [&hold, &seen](job& j, const std::stop_token& st) {
        if (!hold.wait(st)) {
            throw stopped_by_token{};
        }
        seen.add(j.id);
    };
}

// A thread blocked in a submit call, as the test sees it.
struct submitter {
    std::atomic<long> tid{0};
    std::atomic<bool> done{false};
    std::atomic<submit_status> result{submit_status::full};
    std::atomic<bool> request_untouched{false};

    // Waits until the thread has started and is asleep inside the submit call; false if the call
    // returned instead.
    bool blocked() {
        return eventually([this] {
                   const long t = tid.load();
                   return done.load() || (t != 0 && is_asleep(t));
               }) &&
               !done.load();
    }
};

}  // namespace workerpool::test
