// detail::spin_until's pause budget: a thread whose yield gave its core to another thread pauses
// only briefly before it yields in its next spins (the thread it waits for may be the one waiting
// for the core), and goes back to the long pause after several spins whose yields all came
// straight back.

#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/spin.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace {

namespace wd = workerpool::detail;

constexpr auto never = [](bool) { return false; };

#if defined(__linux__)
// Pins the calling thread to one CPU; reports whether it could.
bool pin_to(std::size_t cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0;
}

// Gives the calling thread back its affinity mask when the scope ends.
class affinity_restorer {
public:
    affinity_restorer() { ok_ = pthread_getaffinity_np(pthread_self(), sizeof(old_), &old_) == 0; }
    affinity_restorer(const affinity_restorer&) = delete;
    affinity_restorer& operator=(const affinity_restorer&) = delete;
    ~affinity_restorer() {
        if (ok_) {
            (void)pthread_setaffinity_np(pthread_self(), sizeof(old_), &old_);
        }
    }
    [[nodiscard]] bool ok() const noexcept { return ok_; }

private:
    cpu_set_t old_{};
    bool ok_ = false;
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
// yield that let another thread run); 0 if there was none within the spin's 20 ms.
unsigned polls_before_gap(std::int64_t gap_ns) {
    unsigned polls = 0;
    unsigned before_gap = 0;
    std::int64_t last = wd::now_ns();
    (void)wd::spin_until(20'000'000, [&](bool) {
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
    std::atomic<int> hog_pinned{0};  // 1: pinned and spinning; -1: could not pin
    std::jthread hog([&](const std::stop_token& st) {
        hog_pinned.store(pin_to(cpu) ? 1 : -1);
        while (!st.stop_requested()) {
        }
    });
    while (hog_pinned.load() == 0) {
        std::this_thread::yield();
    }
    REQUIRE(hog_pinned.load() == 1);
    const affinity_restorer restore;
    REQUIRE(restore.ok());
    REQUIRE(pin_to(cpu));
    wd::shared_core_credit = 0;
    REQUIRE(wd::spin_pauses() == wd::spin_pauses_alone);
    // A yield with the hog runnable on the same CPU hands it the core; allow a few tries for a
    // scheduler that first keeps us on it.
    for (int i = 0; i < 50 && wd::spin_pauses() != wd::spin_pauses_shared; ++i) {
        (void)wd::spin_until(100'000, never);
    }
    CHECK(wd::spin_pauses() == wd::spin_pauses_shared);
    // The next spins' first long gap (a yield that let the hog run) comes after their few pauses,
    // well before the polls of a thread that pauses long (a yield answered by keeping us on the
    // core moves it to a later poll; a preemption can only bring it sooner). The best of three.
    unsigned best = 0;
    for (int i = 0; i < 3; ++i) {
        const unsigned before_gap = polls_before_gap(wd::shared_core_yield_ns);
        if (before_gap != 0 && (best == 0 || before_gap < best)) {
            best = before_gap;
        }
    }
    CHECK(best >= 1);
    CHECK(best < wd::spin_pauses_alone);
}
#endif

TEST_CASE("spin_until: a thread that saw its core shared pauses long again only after several "
          "spins whose yields all came straight back",
          "[spin][unit]") {
    // The rule, step by step.
    CHECK(wd::credit_after_spin(0, true) == wd::shared_core_memory);
    CHECK(wd::credit_after_spin(3, true) == wd::shared_core_memory);  // starts over
    CHECK(wd::credit_after_spin(3, false) == 2u);
    CHECK(wd::credit_after_spin(0, false) == 0u);
    // (A spin that never yielded leaves the credit: the last check below.)

    // spin_until applies it. With a yield that comes straight back (no other thread runs), the
    // spins after a shared core pause briefly until `shared_core_memory` of them yielded; one
    // that took long starts the count over. (A preemption between the two clock reads around
    // the yield also counts as a long one: the loop allows for a few.)
    const auto at_once = [] {};
    const auto long_yield = [] { std::this_thread::sleep_for(std::chrono::microseconds(50)); };
    wd::shared_core_credit = 0;
    (void)wd::spin_until(100'000, never, long_yield);
    CHECK(wd::shared_core_credit == wd::shared_core_memory);
    CHECK(wd::spin_pauses() == wd::spin_pauses_shared);
    unsigned spins = 0;
    while (wd::spin_pauses() != wd::spin_pauses_alone && spins < 1000) {
        (void)wd::spin_until(20'000, never, at_once);
        ++spins;
        if (spins == 3) {
            (void)wd::spin_until(100'000, never, long_yield);  // the core was shared again
            CHECK(wd::shared_core_credit == wd::shared_core_memory);
        }
    }
    CHECK(wd::spin_pauses() == wd::spin_pauses_alone);
    CHECK(spins >= 3 + wd::shared_core_memory);

    // A spin that ends before it yields says nothing about the core, and changes nothing.
    wd::shared_core_credit = 1;
    CHECK(wd::spin_until(1'000'000'000, [](bool) { return true; }));
    CHECK(wd::shared_core_credit == 1);
    wd::shared_core_credit = 0;
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
