// Misbehaving callers and handlers (issue 6): a handler's stop callback that throws (the standard
// makes that std::terminate, and the pool does not pretend otherwise), and a pool destroyed while
// producers are blocked in submit on a full queue.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/held_workers.hpp"
#include "support/test_util.hpp"

#if defined(__linux__)
#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::failure;
using workerpool::failure_reason;
using workerpool::submit_status;
using workerpool::test::eventually;
using workerpool::test::finally;
using workerpool::test::gate;
using workerpool::test::stopped_by_token;
using workerpool::test::submitter;
using workerpool::test::this_tid;
using workerpool::test::tracked;

#if defined(__linux__)

// The write end of the pipe through which the death-test child reports what happened; -1 in the
// parent. A global because std::terminate handlers take no argument.
int child_report_fd = -1;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

void child_report(char what) noexcept {
    if (child_report_fd >= 0) {
        (void)::write(child_report_fd, &what, 1);
    }
}

// The death-test child: a pool whose handler registers a throwing stop_callback and then ignores
// its token; the supervisor stops the token when the 20 ms timeout passes, which runs the callback
// inside request_stop(). Reports 'C' when the callback runs and 'T' from std::terminate. Never
// returns: if nothing kills it within 60 s it exits with 0, which the parent counts as a failure.
[[noreturn]] void run_throwing_stop_callback_child(int report_fd) {
    child_report_fd = report_fd;
    // The test framework's SIGABRT handler would report a failure from the child: die plainly.
    (void)std::signal(SIGABRT, SIG_DFL);
    std::set_terminate([] {
        child_report('T');
        std::abort();
    });
    gate never;  // never opened: the handler ignores its token for good
    workerpool::options<int> o;
    o.default_timeout = 20ms;
    o.min_workers = 1;
    o.max_workers = 1;
    // Leaked on purpose: the child ends by abort() or _exit(), never by running destructors.
    auto* pool = new dispatcher<int>(  // NOLINT(cppcoreguidelines-owning-memory)
        [&never](int&, const std::stop_token& st) {
            const std::stop_callback on_stop(st, [] {
                child_report('C');
                throw std::runtime_error("thrown from a stop callback");
            });
            never.wait();
        },
        o);
    if (pool->try_submit(1) != submit_status::accepted) {
        ::_exit(3);
    }
    (void)eventually([] { return false; }, 60s);  // only a bound: the abort should end us first
    ::_exit(0);
}

#endif

}  // namespace

// A stop callback runs inside std::stop_source::request_stop(), which is noexcept: the standard
// says a callback that exits with an exception calls std::terminate. The pool cannot catch it (it
// is not on the stack that throws), so this documents the consequence: the process dies with
// SIGABRT, through std::terminate, when the deadline stops the token.
TEST_CASE("a stop_callback that throws when the deadline stops the token terminates the process",
          "[dispatcher][timeout][misbehaviour][unit]") {
#if !defined(__linux__)
    WARN("skipped: the death test uses fork() and waitpid(), written for Linux");
#else
    std::array<int, 2> fds{-1, -1};
    REQUIRE(::pipe2(fds.data(), O_CLOEXEC) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(fds[0]);
        run_throwing_stop_callback_child(fds[1]);
    }
    ::close(fds[1]);
    int status = 0;
    pid_t reaped = 0;
    // Generous: under a sanitizer on a loaded machine the child may take seconds to start.
    const bool ended = eventually(
        [&] {
            reaped = ::waitpid(child, &status, WNOHANG);
            return reaped != 0;
        },
        120s);
    if (!ended) {
        ::kill(child, SIGKILL);
        (void)::waitpid(child, &status, 0);
    }
    std::string seen;
    std::array<char, 16> buf{};
    for (ssize_t n = 0; (n = ::read(fds[0], buf.data(), buf.size())) > 0;) {
        seen.append(buf.data(), static_cast<std::size_t>(n));
    }
    ::close(fds[0]);

    REQUIRE(ended);
    REQUIRE(reaped == child);
    INFO("wait status " << status << ", child reported \"" << seen << "\"");
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(seen == "CT");  // the callback ran, then std::terminate: not some other abort
#endif
}

// Producers blocked in submit()/submit_for() on a full pool while another thread destroys it: the
// destructor closes intake first, which wakes them with `closed` (their requests untouched, still
// theirs), and waits for every one of them to leave the call before it frees anything. The pool
// lives on the heap so that AddressSanitizer reports a producer that touches it after the free.
// Several rounds, because without that wait the bad interleaving is a matter of scheduling.
TEST_CASE("the destructor wakes producers blocked in submit with closed and outlives their calls",
          "[dispatcher][backpressure][shutdown][misbehaviour][unit]") {
    constexpr int rounds = 5;
    constexpr int producers = 8;
    constexpr std::size_t capacity = 2;
    for (int round = 0; round < rounds; ++round) {
        INFO("round " << round);
        tracked::reset();
        gate hold;
        std::atomic<int> dead_letters{0};
        std::atomic<int> not_cancelled{0};  // dead letters with another reason
        workerpool::options<tracked> o;
        o.capacity = capacity;
        o.min_workers = 1;
        o.max_workers = 1;
        o.destructor_grace = 0ns;  // cancel the held handler at once
        o.on_failure = [&](failure<tracked>&& f) {
            dead_letters.fetch_add(1);
            if (f.reason != failure_reason::cancelled) {
                not_cancelled.fetch_add(1);
            }
        };
        auto pool = std::make_unique<dispatcher<tracked>>(
            [&](tracked&, const std::stop_token& st) {
                if (!hold.wait(st)) {
                    throw stopped_by_token{};
                }
            },
            o);
        dispatcher<tracked>& p = *pool;

        // One request held in the handler, `capacity` more filling the queue.
        REQUIRE(p.try_submit(tracked{0}) == submit_status::accepted);
        REQUIRE(eventually([&] { return hold.waiting() == 1; }));
        for (int i = 1; i <= static_cast<int>(capacity); ++i) {
            REQUIRE(p.try_submit(tracked{i}) == submit_status::accepted);
        }
        REQUIRE(p.try_submit(tracked{99}) == submit_status::full);

        std::array<submitter, producers> subs;
        std::vector<std::jthread> threads;
        threads.reserve(producers);
        finally cleanup([&] {
            hold.open();
            pool.reset();  // wakes any producer still blocked, if a REQUIRE below unwound
        });
        for (int i = 0; i < producers; ++i) {
            threads.emplace_back([&p, &sub = subs.at(static_cast<std::size_t>(i)), i] {
                sub.tid = this_tid();
                const int id = 100 + i;
                tracked r{id};
                sub.result = i % 2 == 0 ? p.submit(std::move(r)) : p.submit_for(std::move(r), 60s);
                // NOLINTNEXTLINE(bugprone-use-after-move): refused requests are left untouched
                sub.request_untouched = r.id == id && !r.moved_from;
                sub.done = true;
            });
        }
        for (auto& s : subs) {
            REQUIRE(s.blocked());
        }

        pool.reset();  // the destructor races the blocked producers
        for (auto& t : threads) {
            t.join();
        }
        for (std::size_t i = 0; i < subs.size(); ++i) {
            INFO("producer " << i);
            CHECK(subs.at(i).result.load() == submit_status::closed);
            CHECK(subs.at(i).request_untouched.load());
        }
        // What was accepted ended once each: the held request (its token stopped by the
        // destructor's zero grace) and the queued ones, all dead-lettered as cancelled.
        CHECK(dead_letters.load() == 1 + static_cast<int>(capacity));
        CHECK(not_cancelled.load() == 0);
        CHECK(tracked::live.load() == 0);
        CHECK(tracked::misuse.load() == 0);
    }
}
