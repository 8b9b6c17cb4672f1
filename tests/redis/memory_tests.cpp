// The consumer when memory runs out for a while: a transient out-of-memory must not end the
// process, lose an entry, or leave the consumer stuck once memory is back.
//
// This file is an executable of its own (workerpool_redis_memory_tests) because it replaces the
// global operator new / delete (every form) for its whole binary. The replacements forward to
// malloc/free and fail nothing unless a switch is set: `fail_everywhere` (every thread but the
// test's own, which sets `exempt`), or a thread's own `fail_while`. hiredis allocates with
// malloc, so its buffers are not failed: what fails is every C++ allocation of the consumer, its
// pool and the handlers.

#include <workerpool/redis/stream_consumer.hpp>
#include <workerpool/retry.hpp>

#include "redis/audit.hpp"
#include "redis/redis_util.hpp"
#include "support/catch.hpp"
#include "support/replaced_new.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace {

// Set: every allocation fails on every thread that is not `exempt`.
std::atomic<bool> fail_everywhere{false};
// Set on the test's own thread: it sets up, produces and audits through the window.
thread_local bool exempt = false;
// Non-null: every allocation on this thread fails while the flag it points to is set.
thread_local const std::atomic<bool>* fail_while = nullptr;

bool injected_failure() noexcept {
    return !exempt && (fail_everywhere.load() || (fail_while != nullptr && fail_while->load()));
}

}  // namespace

// The hooks of support/replaced_new.hpp.
void* workerpool::test::allocate(std::size_t n) noexcept {
    return injected_failure() ? nullptr : std::malloc(n == 0 ? 1 : n);
}

void* workerpool::test::allocate_aligned(std::size_t n, std::align_val_t al) noexcept {
    return injected_failure() ? nullptr : aligned_malloc(n, al);
}

void workerpool::test::deallocate(void* p) noexcept {
    std::free(p);
}

namespace {

using namespace std::chrono_literals;
using workerpool::test::eventually;
using workerpool::test::redis_client;
namespace wr = workerpool::redis;

// Ends the failures however the test ends (a REQUIRE that unwinds included).
struct memory_back {
    memory_back() = default;
    memory_back(const memory_back&) = delete;
    memory_back& operator=(const memory_back&) = delete;
    ~memory_back() { fail_everywhere.store(false); }
};

// Handler runs per entry, by the entry's field "n"; recorded without allocating (the handler
// runs while allocations fail, and a handler that throws would be retried or dead-lettered).
class run_counts {
public:
    explicit run_counts(std::size_t n) : runs_(std::make_unique<std::atomic<int>[]>(n)), n_(n) {}

    // Counts a run of `e`; false for an entry without a valid "n".
    bool ran(const wr::stream_entry& e) noexcept {
        const std::string* text = e.find("n");
        std::size_t i = 0;
        if (text == nullptr ||
            std::from_chars(text->data(), text->data() + text->size(), i).ec != std::errc{} ||
            i >= n_) {
            return false;
        }
        runs_[i].fetch_add(1);
        return true;
    }

    // How many of the first `n` entries ran at least once.
    [[nodiscard]] std::size_t ran_once(std::size_t n) const noexcept {
        std::size_t k = 0;
        for (std::size_t i = 0; i < n; ++i) {
            k += runs_[i].load() > 0 ? 1U : 0U;
        }
        return k;
    }

    // Runs of entry `i`.
    [[nodiscard]] int runs(std::size_t i) const noexcept { return runs_[i].load(); }

private:
    std::unique_ptr<std::atomic<int>[]> runs_;
    std::size_t n_;
};

// Counts the events that say "out of memory", without allocating.
struct memory_events {
    std::atomic<int> out_of_memory{0};

    [[nodiscard]] std::function<void(const wr::consumer_event&)> observer() {
        return [this](const wr::consumer_event& e) {
            if (e.detail.find("out of memory") != std::string_view::npos) {
                out_of_memory.fetch_add(1);
            }
        };
    }
};

void add(redis_client& r, const std::string& stream, std::size_t i) {
    (void)r.xadd(stream, {{"n", std::to_string(i)}});
}

}  // namespace

TEST_CASE("redis memory: every allocation failing for 250 ms loses no entry and the consumer "
          "resumes",
          "[redis][memory]") {
    exempt = true;
    constexpr std::size_t before = 300;
    constexpr std::size_t during_most = 3000;
    constexpr std::size_t after = 300;
    constexpr std::size_t most = before + during_most + after + after;
    const std::string stream = workerpool::test::unique_name("memory");
    redis_client r;
    run_counts counts(most);
    std::atomic<int> bad_entries{0};
    memory_events events;

    wr::consumer_options o =
        workerpool::test::consumer_options_for(workerpool::test::redis_port(), stream);
    o.max_in_flight = 64;
    o.batch = 16;
    o.pool.max_workers = 4;
    o.pool.priority_lanes = 2;  // every request goes through the scheduler, which may refuse it
    o.on_event = events.observer();
    wr::stream_consumer consumer(
        [&](wr::stream_entry& e) {
            if (!counts.ran(e)) {
                bad_entries.fetch_add(1);
            }
        },
        o);

    std::size_t n = 0;
    for (; n < before; ++n) {
        add(r, stream, n);
    }
    REQUIRE(eventually([&] { return counts.ran_once(before) >= before / 2; }));
    {
        const memory_back end_failures;
        const auto window_end = std::chrono::steady_clock::now() + 250ms;
        fail_everywhere.store(true);
        while (std::chrono::steady_clock::now() < window_end && n < before + during_most) {
            add(r, stream, n++);  // the test thread is exempt: it keeps producing
        }
        (void)eventually([&] { return std::chrono::steady_clock::now() >= window_end; });
    }
    for (const std::size_t end = n + after; n < end; ++n) {
        add(r, stream, n);
    }

    INFO("entries " << n << ", out-of-memory events " << events.out_of_memory.load());
    CHECK(events.out_of_memory.load() > 0);  // the reader did run out of memory in the window
    CHECK(eventually([&] { return counts.ran_once(n) == n; }, 60s));
    CHECK(eventually([&] { return r.pending(stream, "g") == 0; }, 60s));

    // Still reading and acknowledging: new entries run and are acknowledged.
    const std::size_t first_new = n;
    for (const std::size_t end = n + after; n < end; ++n) {
        add(r, stream, n);
    }
    CHECK(eventually([&] { return counts.ran_once(n) == n; }, 30s));
    CHECK(eventually([&] { return r.pending(stream, "g") == 0; }, 30s));
    CHECK(counts.runs(first_new) >= 1);

    const auto a = workerpool::test::audit(r, stream, "g", consumer.dead_letter_stream(), {});
    CHECK(a.entries == n);
    CHECK(a.pending == 0);
    CHECK(a.dead == 0);
    CHECK(bad_entries.load() == 0);
    const wr::consumer_stop_report report = consumer.stop(5s);
    CHECK(report.left_pending == 0);
    CHECK(report.unacknowledged == 0);
    r.del({stream, consumer.dead_letter_stream()});
}

TEST_CASE("redis memory: an entry whose failure cannot be booked for want of memory runs again",
          "[redis][memory]") {
    exempt = true;
    constexpr std::size_t n = 20;
    const std::string stream = workerpool::test::unique_name("memory-failed");
    redis_client r;
    run_counts counts(n);
    std::atomic<bool> short_of_memory{false};
    std::atomic<int> thrown{0};
    std::atomic<bool> failure_seen{false};

    wr::consumer_options o =
        workerpool::test::consumer_options_for(workerpool::test::redis_port(), stream);
    o.pool.max_workers = 1;
    o.pool.on_failure = [&](workerpool::failure<wr::stream_entry>&&) { failure_seen.store(true); };
    wr::stream_consumer consumer(
        [&](wr::stream_entry& e) {
            (void)counts.ran(e);
            if (e.find("fail") != nullptr && thrown.fetch_add(1) == 0) {
                // The first run fails for good, and its failure cannot be booked (copied for
                // the dead-letter stream): this worker has no memory until the test says so.
                // Built first: its message is allocated (throwing a copy allocates nothing).
                const workerpool::permanent_error error("fails once");
                short_of_memory.store(true);
                fail_while = &short_of_memory;
                throw error;
            }
            fail_while = nullptr;
        },
        o);

    (void)r.xadd(stream, {{"n", "0"}, {"fail", "1"}});
    for (std::size_t i = 1; i < n; ++i) {
        add(r, stream, i);
    }
    // The consumer's booking of the failure ran, out of memory (it reaches the user's
    // on_failure after, or throws, which the pool counts).
    REQUIRE(eventually(
        [&] { return failure_seen.load() || consumer.stats().pool.callback_errors >= 1; }));
    short_of_memory.store(false);

    INFO("runs of the failing entry: " << counts.runs(0));
    CHECK(eventually([&] { return counts.ran_once(n) == n; }));
    CHECK(eventually([&] { return r.pending(stream, "g") == 0; }, 30s));
    CHECK(counts.runs(0) == 2);  // failed once unbooked, then ran again and succeeded
    const auto a = workerpool::test::audit(r, stream, "g", consumer.dead_letter_stream(), {});
    CHECK(a.dead == 0);
    const wr::consumer_stop_report report = consumer.stop(5s);
    CHECK(report.left_pending == 0);
    r.del({stream, consumer.dead_letter_stream()});
}
