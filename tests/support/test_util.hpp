#pragma once

// Helpers for deterministic concurrent tests: `eventually` instead of sleeping, `gate` to hold
// workers inside a handler (the only way tests hold threads), `finally` to let them go when a
// test fails half-way, `wait_for_stop` for handlers that honour their token, and `tracked` to
// count live objects. None of them uses Catch2, so they may be used on worker threads (where
// assertions are not allowed).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>
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

/// Thrown by a handler whose `gate::wait(st)` was cut short by its stop token.
struct stopped_by_token {};

/// The one way tests hold threads: workers inside a handler, or test threads at a start line.
/// `release(n)` lets `n` threads through (waiting now or arriving later), `open()` lets every
/// thread through from then on, and `waiting()` counts the threads held right now, so a test
/// holds N workers exactly (`eventually([&] { return g.waiting() == N; })`), asserts on depth,
/// stats or scaling, then lets them go.
/// `wait(st)` also returns (false) when `st` is stopped, so a pool whose handlers wait that way
/// can always be shut down, even when a test fails half-way; `wait()` ignores stop tokens, for a
/// handler that must ignore its token (a stuck handler) and for threads that have none. A test
/// that holds handlers with `wait()` opens the gate before the pool is shut down or destroyed:
/// `finally open_at_end([&] { g.open(); })` does it even when a REQUIRE fails.
/// Thread safety: all members, any thread.
class gate {
public:
    gate() = default;
    gate(const gate&) = delete;
    gate& operator=(const gate&) = delete;
    gate(gate&&) = delete;
    gate& operator=(gate&&) = delete;
    ~gate() = default;

    /// Blocks until this thread may pass (a `release` it takes, or `open()`).
    void wait() {
        std::unique_lock lock(mutex_);
        ++waiting_;
        cv_.wait(lock, [this] { return may_pass_locked(); });
        --waiting_;
    }

    /// Blocks until this thread may pass, or `st` is stopped. Returns true if it passed, false if
    /// `st` was stopped first (it then takes no pass).
    [[nodiscard]] bool wait(const std::stop_token& st) {
        std::unique_lock lock(mutex_);
        ++waiting_;
        const bool passed = cv_.wait(lock, st, [this] { return may_pass_locked(); });
        --waiting_;
        return passed;
    }

    /// Lets `n` more threads through, waiting now or arriving later.
    void release(std::size_t n = 1) {
        {
            std::lock_guard lock(mutex_);
            passes_ += n;
        }
        cv_.notify_all();
    }

    /// Lets every thread through, now and later. Idempotent.
    void open() {
        {
            std::lock_guard lock(mutex_);
            open_ = true;
        }
        cv_.notify_all();
    }

    /// Returns how many threads are inside a `wait` right now (poll it with `eventually`).
    [[nodiscard]] std::size_t waiting() const {
        std::lock_guard lock(mutex_);
        return waiting_;
    }

private:
    // Takes a pass if there is one. Pre: mutex_ held.
    bool may_pass_locked() {
        if (open_) {
            return true;
        }
        if (passes_ == 0) {
            return false;
        }
        --passes_;
        return true;
    }

    mutable std::mutex mutex_;
    std::condition_variable_any cv_;
    std::size_t passes_ = 0;   // guarded by mutex_
    std::size_t waiting_ = 0;  // guarded by mutex_
    bool open_ = false;        // guarded by mutex_
};

/// Runs `f` when the scope ends, also when a REQUIRE unwinds it: opens a gate, and shuts a pool
/// down, before the threads it holds are joined.
template <class F>
class finally {
public:
    explicit finally(F f) : f_(std::move(f)) {}
    finally(const finally&) = delete;
    finally& operator=(const finally&) = delete;
    finally(finally&&) = delete;
    finally& operator=(finally&&) = delete;
    ~finally() { f_(); }

private:
    F f_;
};

/// Blocks until `st` is stopped or `limit` has passed (a safety net, so that a broken pool
/// cannot hang the test); returns whether the token was stopped. For a handler that honours its
/// token; it wakes through a std::stop_callback.
inline bool wait_for_stop(const std::stop_token& st,
                          std::chrono::nanoseconds limit = std::chrono::seconds(10)) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_for(lock, st, limit, [] { return false; });
    return st.stop_requested();
}

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
