// A polite crawler: one connection per host (the host is the request's key: its fetches run one
// at a time, in the order they were queued), at most 25 fetches a second per host (a token
// bucket per key), user-triggered fetches in a high-priority lane beside a low-priority recrawl,
// and a server's 429 Retry-After honoured. Nothing goes on the network: a fetch sleeps 8 ms, and
// about one page in eight answers 429 on its first try. It checks the per-host rules from what
// the handlers saw, prints a summary, and exits 1 if a rule was broken.
//
// A key keeps submit order, and priority does not overtake within a key: a user fetch waits for
// the fetches of its host queued before it. So the recrawl queues one page per host at a time (the
// next when the previous ends), and a user fetch waits for at most one recrawl page of its host;
// ahead of every other host's recrawl, it waits for a free worker, not for the backlog.
#include <workerpool/workerpool.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr double per_host_rate = 25.0;  // fetches started per second, per host
constexpr std::size_t per_host_burst = 2;
constexpr auto fetch_time = 8ms;
constexpr auto retry_after_429 = 30ms;

struct fetch {
    std::size_t host = 0;
    int page = 0;           // recrawl: its page number; user fetch: -1
    std::uint64_t seq = 0;  // its place among the fetches queued for its host
    clock_type::time_point queued{};
    clock_type::time_point not_before{};  // when a 429 said to come back
    int attempts = 0;                     // travels with the request's retries
};

struct host {
    std::string name;
    std::uint64_t key = 0;
    int pages = 0;  // to recrawl
    std::mutex submit_mutex;
    std::uint64_t queued = 0;  // guarded by submit_mutex: fetches queued so far
    // What the handlers saw:
    std::atomic<int> in_flight{0};
    std::atomic<int> max_in_flight{0};
    std::atomic<std::uint64_t> last_seq{0};
    std::atomic<int> broken{0};  // out of order, or back before its Retry-After
    std::atomic<int> fetched{0};
    std::mutex starts_mutex;
    std::vector<clock_type::time_point> starts;  // guarded by starts_mutex
};

std::array<host, 12> hosts;  // two big sites, ten small ones
std::atomic<int> too_many_429s{0};
std::atomic<int> retried_429{0};
std::atomic<int> recrawl_left{0};
std::mutex waits_mutex;
std::vector<double> user_waits_ms;     // guarded by waits_mutex
std::vector<double> recrawl_waits_ms;  // guarded by waits_mutex

workerpool::dispatcher<fetch>* pool = nullptr;

// A pseudo-random but repeatable answer: 429 for about one page in eight, on its first try.
bool answers_429(const fetch& f) {
    std::uint64_t x = f.host * 1000003 + static_cast<std::uint64_t>(f.page + 7) * 7919;
    x ^= x >> 13;
    x *= 0x9E3779B97F4A7C15ULL;
    return f.attempts == 1 && (x >> 40) % 8 == 0;
}

// Queues `f` for its host: the host's key keeps one fetch at a time, in this order.
bool queue_fetch(fetch f, unsigned priority) {
    host& h = hosts.at(f.host);
    std::lock_guard lock(h.submit_mutex);
    f.seq = ++h.queued;
    f.queued = clock_type::now();
    return pool->try_submit(std::move(f), {.key = h.key, .priority = priority}) ==
           workerpool::submit_status::accepted;
}

void fetch_page(fetch& f) {
    const auto start = clock_type::now();
    host& h = hosts.at(f.host);
    ++f.attempts;
    const int inside = h.in_flight.fetch_add(1) + 1;
    int seen = h.max_in_flight.load();
    while (inside > seen && !h.max_in_flight.compare_exchange_weak(seen, inside)) {
    }
    // A first attempt follows the fetch queued before it; a retry follows its own first attempt.
    const std::uint64_t expected = f.attempts == 1 ? h.last_seq.load() + 1 : f.seq;
    if (f.seq != expected || start < f.not_before) {
        h.broken.fetch_add(1);
    }
    h.last_seq.store(f.seq);
    {
        std::lock_guard lock(h.starts_mutex);
        h.starts.push_back(start);
    }
    if (f.attempts == 1) {
        const double waited = std::chrono::duration<double, std::milli>(start - f.queued).count();
        std::lock_guard lock(waits_mutex);
        (f.page < 0 ? user_waits_ms : recrawl_waits_ms).push_back(waited);
    }
    std::this_thread::sleep_for(fetch_time);  // the request and its answer
    h.in_flight.fetch_sub(1);
    if (answers_429(f)) {
        retried_429.fetch_add(1);
        f.not_before = clock_type::now() + retry_after_429;
        throw workerpool::retry_after(retry_after_429, "HTTP 429");
    }
    h.fetched.fetch_add(1);
    if (f.page >= 0) {  // the recrawl queues the host's next page as this one ends
        const bool more = f.page + 1 < h.pages;
        if (!more || !queue_fetch({.host = f.host, .page = f.page + 1}, 0)) {
            h.broken.fetch_add(more ? 1 : 0);
            recrawl_left.fetch_sub(1);  // this host's recrawl is over
        }
    }
}

// Whether `starts` kept to the token bucket: no more than burst + rate * t starts in any span of
// t seconds. `slack` allows for the moment between a token taken and the handler's clock read.
bool within_rate(std::vector<clock_type::time_point> starts, int slack) {
    std::sort(starts.begin(), starts.end());
    for (std::size_t i = 0; i < starts.size(); ++i) {
        for (std::size_t j = i + 1; j < starts.size(); ++j) {
            const double span = std::chrono::duration<double>(starts[j] - starts[i]).count();
            if (static_cast<double>(j - i + 1) >
                static_cast<double>(per_host_burst) + per_host_rate * span + slack) {
                return false;
            }
        }
    }
    return true;
}

double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main() {
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        host& h = hosts.at(i);
        h.name = (i < 2 ? "big" : "small") + std::to_string(i) + ".example";
        const std::size_t hashed = std::hash<std::string>{}(h.name);
        h.key = hashed != 0 ? hashed : 1;  // 0 means "no key"
        h.pages = i < 2 ? 36 : 10;
    }
    recrawl_left = static_cast<int>(hosts.size());

    workerpool::options<fetch> opts;
    opts.min_workers = 2;
    opts.max_workers = 2;                                   // two connections in all
    opts.priority_lanes = 2;                                // 1: user fetches, 0: recrawl
    opts.key_rate_limit = {per_host_rate, per_host_burst};  // per host
    opts.retry.max_attempts = 3;                            // a 429 is retried...
    opts.retry.initial_backoff = 5ms;                       // ...after its Retry-After
    opts.on_failure = [](workerpool::failure<fetch>&& f) {  // still 429 after 3 tries
        too_many_429s.fetch_add(1);
        if (f.request.page >= 0) {
            recrawl_left.fetch_sub(1);  // its host's later pages are not queued
        }
    };
    workerpool::dispatcher<fetch> crawler{fetch_page, opts};
    pool = &crawler;

    const auto t0 = clock_type::now();
    bool refused = false;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        refused |= !queue_fetch({.host = i, .page = 0}, 0);
    }
    for (int u = 0; u < 40; ++u) {  // a user clicks "refresh" every 25 ms, on some host
        std::this_thread::sleep_for(25ms);
        refused |=
            !queue_fetch({.host = static_cast<std::size_t>(u * 7) % hosts.size(), .page = -1}, 1);
    }
    while (recrawl_left.load() != 0 && !refused) {
        std::this_thread::sleep_for(10ms);
    }
    crawler.wait_idle();
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    const workerpool::stats_snapshot s = crawler.stats();
    (void)crawler.shutdown(1s);

    bool ok = !refused && too_many_429s.load() == 0;
    std::printf("%-18s %6s %9s %11s %6s\n", "host", "pages", "max conc.", "order kept", "rate");
    for (host& h : hosts) {
        const bool rate_ok = within_rate(h.starts, 2);
        const bool order_ok = h.broken.load() == 0;
        ok = ok && rate_ok && order_ok && h.max_in_flight.load() == 1;
        std::printf("%-18s %6d %9d %11s %6s\n", h.name.c_str(), h.fetched.load(),
                    h.max_in_flight.load(), order_ok ? "yes" : "NO", rate_ok ? "ok" : "OVER");
    }
    std::printf("%llu fetches in %.2f s; %d answered 429 and were retried after their "
                "Retry-After; %llu waits for a host's token\n",
                static_cast<unsigned long long>(s.completed), seconds, retried_429.load(),
                static_cast<unsigned long long>(s.throttled));
    std::printf("wait from queued to start, median (max): user fetches %.1f ms (%.1f), recrawl "
                "%.1f ms (%.1f)\n",
                median(user_waits_ms),
                *std::max_element(user_waits_ms.begin(), user_waits_ms.end()),
                median(recrawl_waits_ms),
                *std::max_element(recrawl_waits_ms.begin(), recrawl_waits_ms.end()));
    std::printf("%s\n", ok ? "every per-host rule held" : "A PER-HOST RULE WAS BROKEN");
    return ok ? 0 : 1;
}
