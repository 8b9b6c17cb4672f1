#pragma once

// Helpers for deterministic concurrent tests: `eventually` instead of sleeping, `gate` to hold
// workers inside a handler, and `tracked` to count live objects. None of them uses Catch2, so
// they may be used on worker threads (where assertions are not allowed).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace workerpool::test {

/// Polls `pred` until it returns true or `deadline` has passed; returns its last answer.
/// Yields between the first few hundred polls, then sleeps 1 ms between polls, so a long wait
/// does not starve the threads it waits for on a small machine (or under TSan).
/// Thread safety: `pred` runs on the calling thread only.
template <class Pred>
[[nodiscard]] bool eventually(Pred&& pred,
                              std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    for (unsigned polls = 0;; ++polls) {
        if (pred()) {
            return true;
        }
        if (std::chrono::steady_clock::now() >= until) {
            return static_cast<bool>(pred());
        }
        if (polls < 256) {
            std::this_thread::yield();
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
}

/// A one-shot barrier: every `wait()` blocks until `open()` is called, and returns at once after.
/// Use it to hold N workers inside a handler so that queue depth, stats and scaling are exact:
/// the handler calls `wait()`, the test checks `eventually([&] { return g.waiting() == N; })`,
/// asserts, then calls `open()`. Open the gate before the pool is shut down or destroyed.
/// Thread safety: all members, any thread. Not reusable (there is no close).
class gate {
public:
    gate() = default;
    gate(const gate&) = delete;
    gate& operator=(const gate&) = delete;
    gate(gate&&) = delete;
    gate& operator=(gate&&) = delete;
    ~gate() = default;

    /// Blocks until `open()` has been called. Returns at once if it already was.
    void wait() noexcept {
        arrived_.fetch_add(1, std::memory_order_relaxed);  // a count for tests to poll; no ordering
        // [G2] sees what the test wrote before [G1].
        while (!open_.load(std::memory_order_acquire)) {
            open_.wait(false, std::memory_order_acquire);
        }
        arrived_.fetch_sub(1, std::memory_order_relaxed);
    }

    /// Releases every current and future waiter. Idempotent.
    void open() noexcept {
        // [G1] publishes what the test wrote before opening; pairs with [G2].
        open_.store(true, std::memory_order_release);
        open_.notify_all();
    }

    /// Returns whether `open()` has been called.
    [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }

    /// Returns how many threads are inside `wait()` right now (racy by nature; poll it).
    [[nodiscard]] std::size_t waiting() const noexcept {
        return arrived_.load(std::memory_order_relaxed);
    }

private:
    std::atomic<bool> open_{false};
    std::atomic<std::size_t> arrived_{0};  // threads inside wait()
};

/// Opens `g` when the scope ends, so threads parked on it are released even if a REQUIRE fails.
class opener {
public:
    explicit opener(gate& g) : g_(g) {}
    opener(const opener&) = delete;
    opener& operator=(const opener&) = delete;
    opener(opener&&) = delete;
    opener& operator=(opener&&) = delete;
    ~opener() { g_.open(); }

private:
    gate& g_;
};

/// Whether this build runs under ThreadSanitizer (which makes threads 5-15x slower: tests scale
/// their element counts down with it).
#if defined(__SANITIZE_THREAD__)
inline constexpr bool under_tsan = true;
#else
inline constexpr bool under_tsan = false;
#endif

/// A request type that counts its live instances (after rigtorp's TestType): every constructor
/// increments `tracked::live`, the destructor decrements it, so a test that ends with
/// `tracked::live == 0` proved that nothing was leaked or destroyed twice. Moves are noexcept
/// and mark the source `moved_from`; any operation on an object already destroyed counts in
/// `tracked::misuse`. The counters are global: call `tracked::reset()` at the start of a test
/// that checks them, and check them only after the pool has been shut down (the join is what
/// orders the counts, so they use relaxed operations).
// NOLINTBEGIN(*-non-private-member-variables-in-classes,*-avoid-non-const-global-variables):
// a test type whose state tests read directly.
struct tracked {
    static inline std::atomic<long> live{0};    // instances alive now
    static inline std::atomic<long> misuse{0};  // copies, moves or destructions of a dead object

    int id = 0;               ///< The payload; copied and moved along.
    bool moved_from = false;  ///< Set on the source of a move.

    tracked() noexcept { born(); }
    explicit tracked(int value) noexcept : id(value) { born(); }

    tracked(const tracked& other) noexcept : id(other.id), moved_from(other.moved_from) {
        other.check();
        born();
    }

    tracked(tracked&& other) noexcept : id(other.id), moved_from(other.moved_from) {
        other.check();
        other.moved_from = true;
        born();
    }

    tracked& operator=(const tracked& other) noexcept {
        check();
        other.check();
        id = other.id;
        moved_from = other.moved_from;
        return *this;
    }

    tracked& operator=(tracked&& other) noexcept {
        check();
        other.check();
        id = other.id;
        moved_from = other.moved_from;
        if (&other != this) {
            other.moved_from = true;
        }
        return *this;
    }

    ~tracked() {
        check();
        // volatile: a plain store in a destructor is a dead store that GCC may remove.
        *static_cast<volatile unsigned*>(&canary_) = dead;
        live.fetch_sub(1, std::memory_order_relaxed);  // see the class comment on ordering
    }

    /// Zeroes both counters. Call it only while no `tracked` object exists.
    static void reset() noexcept {
        live.store(0, std::memory_order_relaxed);
        misuse.store(0, std::memory_order_relaxed);
    }

    friend bool operator==(const tracked& a, const tracked& b) noexcept { return a.id == b.id; }

private:
    static constexpr unsigned alive = 0xA11FEu;
    static constexpr unsigned dead = 0xDEADu;

    void born() noexcept { live.fetch_add(1, std::memory_order_relaxed); }
    void check() const noexcept {
        if (*static_cast<const volatile unsigned*>(&canary_) != alive) {
            misuse.fetch_add(1, std::memory_order_relaxed);
        }
    }

    unsigned canary_ = alive;  // `dead` once destroyed; read by check()
};
// NOLINTEND(*-non-private-member-variables-in-classes,*-avoid-non-const-global-variables)

/// Elements that no consumer saw, and elements that more than one saw (or one saw twice).
struct exactly_once_tally {
    int missing = 0;
    int duplicated = 0;
};

/// Tallies `seen[consumer][id]` (how many times each consumer popped each id) over ids
/// [0, total).
inline exactly_once_tally tally_ids(const std::vector<std::vector<std::uint8_t>>& seen, int total) {
    exactly_once_tally t;
    for (std::size_t id = 0; id < static_cast<std::size_t>(total); ++id) {
        int count = 0;
        for (const auto& mine : seen) {
            count += mine[id];
        }
        t.missing += count == 0 ? 1 : 0;
        t.duplicated += count > 1 ? 1 : 0;
    }
    return t;
}

}  // namespace workerpool::test
