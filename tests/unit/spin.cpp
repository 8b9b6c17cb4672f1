// detail::spin_until's pause budget: a thread whose yield gave its core to another thread pauses
// only briefly before it yields in its next spins (the thread it waits for may be the one waiting
// for the core), and goes back to the long pause once its yields come straight back.

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/spin.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace {

namespace wd = workerpool::detail;

constexpr auto never = [](bool) { return false; };

#if defined(__linux__)
// Pins the calling thread to one CPU for the scope's life, then gives it back its old mask.
class pinned {
public:
    explicit pinned(std::size_t cpu) {
        REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof(old_), &old_) == 0);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        REQUIRE(pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0);
    }
    pinned(const pinned&) = delete;
    pinned& operator=(const pinned&) = delete;
    ~pinned() { (void)pthread_setaffinity_np(pthread_self(), sizeof(old_), &old_); }

private:
    cpu_set_t old_{};
};

std::size_t first_allowed_cpu() {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    REQUIRE(sched_getaffinity(0, sizeof(mask), &mask) == 0);
    for (std::size_t cpu = 0; cpu < static_cast<std::size_t>(CPU_SETSIZE); ++cpu) {
        if (CPU_ISSET(cpu, &mask)) {
            return cpu;
        }
    }
    FAIL("no CPU in the affinity mask");
    return 0;
}

// The polls a spin makes before the first gap longer than `gap_ns` between two of them (its first
// yield, when another thread wants the core); 0 if there was none.
unsigned polls_before_gap(std::int64_t gap_ns) {
    unsigned polls = 0;
    unsigned before_gap = 0;
    std::int64_t last = wd::now_ns();
    (void)wd::spin_until(2'000'000, [&](bool) {
        const std::int64_t now = wd::now_ns();
        if (before_gap == 0 && polls > 0 && now - last > gap_ns) {
            before_gap = polls;
        }
        ++polls;
        last = now;
        return before_gap != 0;
    });
    return before_gap;
}
#endif

}  // namespace

#if defined(__linux__)
TEST_CASE("spin_until: after a yield that ran another thread on its core, a thread's spins "
          "pause only briefly before they yield",
          "[spin][unit]") {
    const std::size_t cpu = first_allowed_cpu();
    std::atomic<bool> stop{false};
    std::atomic<bool> ready{false};
    std::thread hog([&] {
        const pinned on_cpu(cpu);
        ready.store(true);
        while (!stop.load(std::memory_order_relaxed)) {
        }
    });
    while (!ready.load()) {
        std::this_thread::yield();
    }
    {
        const pinned on_cpu(cpu);
        wd::spin_pauses = wd::spin_pauses_alone;
        // A yield with a runnable thread on the same CPU hands the core over; allow a few tries for
        // a scheduler that first keeps us on it.
        for (int i = 0; i < 50 && wd::spin_pauses != wd::spin_pauses_shared; ++i) {
            (void)wd::spin_until(100'000, never);
        }
        CHECK(wd::spin_pauses == wd::spin_pauses_shared);
        // The next spin's first long gap (a yield that let the hog run) comes after its few pauses,
        // well before the polls of a thread that pauses long (a yield the scheduler answered by
        // keeping us on the core moves it to the next poll; a preemption can only bring it sooner).
        const unsigned before_gap = polls_before_gap(wd::shared_core_yield_ns);
        CHECK(before_gap >= 1);
        CHECK(before_gap < wd::spin_pauses_alone);
    }
    stop.store(true);
    hog.join();
}
#endif

TEST_CASE("spin_until: a thread whose yields come straight back pauses long again",
          "[spin][unit]") {
    wd::spin_pauses = wd::spin_pauses_shared;
    // On a loaded machine a yield may run another thread for a while; keep trying for a few
    // seconds (each try takes microseconds when the core is free).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (wd::spin_pauses != wd::spin_pauses_alone && std::chrono::steady_clock::now() < give_up) {
        (void)wd::spin_until(20'000, never);
    }
    CHECK(wd::spin_pauses == wd::spin_pauses_alone);
}

TEST_CASE("spin_until: polls until ready, and not at all with no budget", "[spin][unit]") {
    unsigned polls = 0;
    CHECK(wd::spin_until(10'000'000'000, [&](bool) { return ++polls == 200; }));
    CHECK(polls == 200);
    polls = 0;
    CHECK_FALSE(wd::spin_until(0, [&](bool) { return ++polls != 0; }));
    CHECK(polls == 0);
    // A spin that never sees its condition gives up once its budget has passed.
    const std::int64_t start = wd::now_ns();
    CHECK_FALSE(wd::spin_until(1'000'000, never));
    CHECK(wd::now_ns() - start >= 1'000'000);
}
