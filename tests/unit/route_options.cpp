// handler_map routes that carry their own job_options (issue 17): what a route's requests get
// where their own job_options leave a field at zero, field by field, and a pool whose handler has
// no route options left as it was.

#include <workerpool/detail/route_options.hpp>
#include <workerpool/dispatcher.hpp>
#include <workerpool/handler_map.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::handler_map;
using workerpool::job_options;

enum class kind { fetch, parse, store, ftp };

struct page {
    kind k = kind::fetch;
    int id = 0;
    bool bad_key = false;  // key_of throws for this request
};

kind key_of(const page& p) {
    if (p.bad_key) {
        throw std::runtime_error("no kind: the request is corrupt");
    }
    return p.k;
}

bool same(const job_options& a, const job_options& b) {
    return a.timeout == b.timeout && a.max_attempts == b.max_attempts && a.deadline == b.deadline;
}

}  // namespace

TEST_CASE("handler_map::options_for returns the options of the request's route",
          "[handler_map][route_options][unit]") {
    handler_map<page, kind> routes{key_of};
    CHECK_FALSE(routes.has_route_options());
    routes.on(kind::fetch, [](page&) {}, {.timeout = 250ms, .max_attempts = 3})
        .on(kind::parse, [](page&, const std::stop_token&) {}, {.timeout = 50ms})
        .on(kind::store, [](page&) {});
    CHECK(routes.has_route_options());

    CHECK(same(routes.options_for(page{kind::fetch}), {.timeout = 250ms, .max_attempts = 3}));
    CHECK(same(routes.options_for(page{kind::parse}), {.timeout = 50ms}));
    CHECK(same(routes.options_for(page{kind::store}), {}));           // a route without options
    CHECK(same(routes.options_for(page{kind::ftp}), {}));             // no route at all
    CHECK(same(routes.options_for(page{kind::fetch, 0, true}), {}));  // key_of throws
}

TEST_CASE("handler_map::on replaces a route's options with the route",
          "[handler_map][route_options][unit]") {
    handler_map<page, kind> routes{key_of};
    routes.on(kind::fetch, [](page&) {}, {.max_attempts = 5});
    CHECK(routes.has_route_options());
    routes.on(kind::fetch, [](page&) {});  // the new route has none
    CHECK_FALSE(routes.has_route_options());
    CHECK(same(routes.options_for(page{kind::fetch}), {}));
    routes.on(kind::parse, [](page&) {}, {.timeout = 1s})
        .on(kind::parse, [](page&) {}, {.timeout = 2s});
    CHECK(routes.has_route_options());
    CHECK(same(routes.options_for(page{kind::parse}), {.timeout = 2s}));
}

TEST_CASE("a request's own job_options override its route's, field by field",
          "[route_options][unit]") {
    using workerpool::detail::merge_route_options;
    const auto at = std::chrono::steady_clock::time_point{} + 1h;
    const auto later = at + 1h;
    const job_options route{.timeout = 250ms, .max_attempts = 3, .deadline = at};

    CHECK(same(merge_route_options(route, {}), route));
    CHECK(same(merge_route_options(route, {.max_attempts = 1}),
               {.timeout = 250ms, .max_attempts = 1, .deadline = at}));
    CHECK(same(merge_route_options(route, {.timeout = 5s}),
               {.timeout = 5s, .max_attempts = 3, .deadline = at}));
    CHECK(same(merge_route_options(route, {.deadline = later}),
               {.timeout = 250ms, .max_attempts = 3, .deadline = later}));
    // A negative timeout means "the default", as on a submit: the route's applies.
    CHECK(same(merge_route_options(route, {.timeout = -1s}), route));
    // A route without options leaves the request's own as they are.
    CHECK(same(merge_route_options({}, {.timeout = 5s}), {.timeout = 5s}));
}

TEST_CASE("a handler without route options gets no route_options_source", "[route_options][unit]") {
    using source = workerpool::detail::route_options_source<page>;
    const job_options own{.timeout = 7s};
    const auto applied = [&own](const source& src, const page& p) {
        job_options jo = own;
        src.apply(p, jo);
        return jo;
    };

    const auto plain = [](page&) {};
    CHECK_FALSE(source::of(&plain).active());  // nothing to ask at submit
    CHECK(same(applied(source::of(&plain), page{}), own));

    handler_map<page, kind> without{key_of};
    without.on(kind::fetch, [](page&) {});
    CHECK_FALSE(source::of(&without).active());
    CHECK(same(applied(source::of(&without), page{kind::fetch}), own));

    handler_map<page, kind> with{key_of};
    with.on(kind::fetch, [](page&) {}, {.timeout = 1s, .max_attempts = 4});
    CHECK(source::of(&with).active());
    CHECK(same(applied(source::of(&with), page{kind::fetch}), {.timeout = 7s, .max_attempts = 4}));
    CHECK(same(applied(source::of(&with), page{kind::parse}), own));
}

// ---------------------------------------------------------------- through a dispatcher

namespace {

struct dead_letters {
    std::mutex m;
    std::vector<workerpool::failure<page>> list;  // guarded by m

    void add(workerpool::failure<page>&& f) {
        std::lock_guard lock(m);
        list.push_back(std::move(f));
    }
    std::size_t size() {
        std::lock_guard lock(m);
        return list.size();
    }
};

// Waits on the attempt's token for up to 5 s; throws when it was stopped, returns otherwise.
void wait_for_stop(const std::stop_token& stop) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    (void)cv.wait_for(lock, stop, 5s, [] { return false; });
    if (stop.stop_requested()) {
        throw std::runtime_error("stopped");
    }
}

workerpool::options<page> quick_retries(dead_letters& dead) {
    workerpool::options<page> opts;
    opts.retry.initial_backoff = 1ms;
    opts.retry.max_backoff = 1ms;
    opts.on_failure = [&dead](workerpool::failure<page>&& f) { dead.add(std::move(f)); };
    return opts;
}

}  // namespace

TEST_CASE("a dispatcher applies a route's timeout and attempts to the route's requests",
          "[route_options][dispatcher][unit]") {
    dead_letters dead;
    std::atomic<int> store_calls{0};
    handler_map<page, kind> routes{key_of};
    routes
        .on(kind::fetch, [](page&, const std::stop_token& stop) { wait_for_stop(stop); },
            {.timeout = 20ms})
        .on(kind::parse, [](page&) { throw std::runtime_error("bad markup"); }, {.max_attempts = 3})
        .on(kind::store, [&](page&) {
            ++store_calls;
            throw std::runtime_error("disk full");
        });
    // The pool's options: 1 attempt, no timeout.
    workerpool::dispatcher<page> pool{std::move(routes), quick_retries(dead)};
    REQUIRE(pool.submit(page{kind::fetch, 1}) == workerpool::submit_status::accepted);
    REQUIRE(pool.submit(page{kind::parse, 2}) == workerpool::submit_status::accepted);
    REQUIRE(pool.submit(page{kind::store, 3}) == workerpool::submit_status::accepted);
    REQUIRE(pool.wait_idle_for(30s));
    (void)pool.shutdown(1s);

    std::lock_guard lock(dead.m);
    REQUIRE(dead.list.size() == 3);
    for (const auto& f : dead.list) {
        if (f.request.k == kind::fetch) {  // the route's 20 ms timeout stopped it
            CHECK(f.reason == workerpool::failure_reason::timed_out);
            CHECK(f.attempts == 1u);
        } else if (f.request.k == kind::parse) {  // the route's 3 attempts
            CHECK(f.reason == workerpool::failure_reason::error);
            CHECK(f.attempts == 3u);
        } else {  // no route options: the pool's single attempt
            CHECK(f.attempts == 1u);
        }
    }
    CHECK(store_calls.load() == 1);
}

TEST_CASE("a request's own job_options override its route's in a dispatcher",
          "[route_options][dispatcher][unit]") {
    dead_letters dead;
    auto opts = quick_retries(dead);
    opts.retry.max_attempts = 4;
    handler_map<page, kind> routes{key_of};
    routes.on(kind::fetch, [](page&, const std::stop_token& stop) { wait_for_stop(stop); },
              {.timeout = 10ms, .max_attempts = 3});
    routes.on(kind::parse, [](page&) { throw std::runtime_error("bad markup"); }, {.timeout = 1h});
    workerpool::dispatcher<page> pool{std::move(routes), opts};

    // Own attempts, the route's timeout.
    REQUIRE(pool.submit(page{kind::fetch, 1}, {.max_attempts = 2}) ==
            workerpool::submit_status::accepted);
    // Nothing of its own: the route's timeout and attempts.
    REQUIRE(pool.submit(page{kind::fetch, 2}) == workerpool::submit_status::accepted);
    // The route sets no attempts: the pool's 4.
    REQUIRE(pool.submit(page{kind::parse, 3}) == workerpool::submit_status::accepted);
    REQUIRE(pool.wait_idle_for(30s));
    (void)pool.shutdown(1s);

    std::lock_guard lock(dead.m);
    REQUIRE(dead.list.size() == 3);
    for (const auto& f : dead.list) {
        if (f.request.id == 1) {
            CHECK(f.reason == workerpool::failure_reason::timed_out);
            CHECK(f.attempts == 2u);
        } else if (f.request.id == 2) {
            CHECK(f.reason == workerpool::failure_reason::timed_out);
            CHECK(f.attempts == 3u);
        } else {
            CHECK(f.reason == workerpool::failure_reason::error);
            CHECK(f.attempts == 4u);
        }
    }
}

TEST_CASE("a key that cannot be taken at submit fails the request, not the submit",
          "[route_options][dispatcher][unit]") {
    dead_letters dead;
    handler_map<page, kind> routes{key_of};
    routes.on(kind::fetch, [](page&) {}, {.max_attempts = 3});
    workerpool::dispatcher<page> pool{std::move(routes), quick_retries(dead)};
    REQUIRE(pool.try_submit(page{kind::fetch, 1, true}) == workerpool::submit_status::accepted);
    REQUIRE(pool.wait_idle_for(30s));
    (void)pool.shutdown(1s);
    std::lock_guard lock(dead.m);
    REQUIRE(dead.list.size() == 1);
    CHECK(dead.list[0].attempts == 1u);  // the route's options could not be found: the pool's
    CHECK(workerpool::what(dead.list[0].error) == "no kind: the request is corrupt");
}

TEST_CASE("a bulk submit gives each request its own route's options",
          "[route_options][dispatcher][bulk][unit]") {
    // 70 requests: more than the 64 whose options a bulk resolves before one claim.
    dead_letters dead;
    handler_map<page, kind> routes{key_of};
    routes
        .on(kind::parse, [](page&) { throw std::runtime_error("bad markup"); }, {.max_attempts = 3})
        .on(kind::store, [](page&) { throw std::runtime_error("disk full"); });
    workerpool::dispatcher<page> pool{std::move(routes), quick_retries(dead)};
    std::vector<page> batch;
    for (int i = 0; i < 70; ++i) {
        batch.push_back(page{i % 2 == 0 ? kind::parse : kind::store, i});
    }
    REQUIRE(pool.submit_bulk(batch) == batch.size());
    REQUIRE(pool.wait_idle_for(30s));
    (void)pool.shutdown(1s);

    std::lock_guard lock(dead.m);
    REQUIRE(dead.list.size() == 70);
    for (const auto& f : dead.list) {
        INFO("request " << f.request.id);
        CHECK(f.attempts == (f.request.k == kind::parse ? 3u : 1u));
    }
}
