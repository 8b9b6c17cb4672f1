// handler_map (issue 2): routes each request by its key, accepts both handler shapes, reports an
// unknown key as an unknown_route (a permanent_error, so not retried) in failure::error rather
// than crashing, and works as a dispatcher's handler.

#include <workerpool/dispatcher.hpp>
#include <workerpool/handler_map.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::dispatcher;
using workerpool::failure;
using workerpool::failure_reason;
using workerpool::handler_map;
using workerpool::submit_status;
using workerpool::unknown_route;
using workerpool::test::eventually;

enum class kind { resize, email, audit };

struct task {
    kind k = kind::resize;
    int id = 0;
};

kind key_of(const task& t) {
    return t.k;
}

}  // namespace

TEST_CASE("handler_map calls the handler registered for the request's key", "[handler_map][unit]") {
    std::vector<int> resized;
    std::vector<int> emailed;
    handler_map<task, kind> routes{key_of};
    routes.on(kind::resize, [&](task& t, std::stop_token) { resized.push_back(t.id); })
        .on(kind::email, [&](task& t) { emailed.push_back(t.id); });  // the one-argument shape
    CHECK(routes.size() == 2u);
    CHECK(routes.contains(kind::resize));
    CHECK(routes.contains(kind::email));
    CHECK_FALSE(routes.contains(kind::audit));

    const std::stop_source source;
    for (task t : {task{kind::email, 1}, task{kind::resize, 2}, task{kind::email, 3}}) {
        routes(t, source.get_token());
    }
    CHECK(resized == std::vector<int>{2});
    CHECK(emailed == std::vector<int>{1, 3});
}

TEST_CASE("handler_map::on replaces the handler of a key already registered",
          "[handler_map][unit]") {
    int first = 0;
    int second = 0;
    handler_map<task, kind> routes{key_of};
    routes.on(kind::audit, [&](task&) { ++first; });
    routes.on(kind::audit, [&](task&) { ++second; });
    CHECK(routes.size() == 1u);
    task t{kind::audit, 0};
    routes(t, std::stop_token{});
    CHECK(first == 0);
    CHECK(second == 1);
}

TEST_CASE("handler_map passes the stop token through to a route", "[handler_map][unit]") {
    bool saw_stop = false;
    handler_map<task, kind> routes{key_of};
    routes.on(kind::resize, [&](task&, std::stop_token st) { saw_stop = st.stop_requested(); });
    std::stop_source source;
    source.request_stop();
    task t{kind::resize, 0};
    routes(t, source.get_token());
    CHECK(saw_stop);
}

TEST_CASE("handler_map lets a route's exception through unchanged", "[handler_map][unit]") {
    handler_map<task, kind> routes{key_of};
    routes.on(kind::email, [](task&) { throw std::out_of_range("no such mailbox"); });
    task t{kind::email, 0};
    CHECK_THROWS_AS(routes(t, std::stop_token{}), std::out_of_range);
}

TEST_CASE("handler_map throws unknown_route naming the key for a key without a handler",
          "[handler_map][unit]") {
    SECTION("an enum key") {
        handler_map<task, kind> routes{key_of};
        routes.on(kind::resize, [](task&) {});
        task t{kind::audit, 0};
        std::string message;
        try {
            routes(t, std::stop_token{});
        } catch (const unknown_route& e) {
            message = e.what();
        }
        CHECK(message.find("no handler for key 2") != std::string::npos);
    }
    SECTION("a string key") {
        handler_map<std::string, std::string> routes{[](const std::string& s) { return s; }};
        routes.on("known", [](std::string&) {});
        std::string request = "nope";
        std::string message;
        try {
            routes(request, std::stop_token{});
        } catch (const unknown_route& e) {
            message = e.what();
        }
        CHECK(message.find("\"nope\"") != std::string::npos);
    }
    SECTION("it is a permanent_error, so the default rule does not retry it") {
        handler_map<task, kind> routes{key_of};
        task t{kind::email, 0};
        std::exception_ptr error;
        try {
            routes(t, std::stop_token{});
        } catch (...) {
            error = std::current_exception();
        }
        REQUIRE(error != nullptr);
        CHECK_FALSE(workerpool::default_retry_if(error));
        CHECK_THROWS_AS(std::rethrow_exception(error), workerpool::permanent_error);
    }
}

TEST_CASE("a dispatcher running a handler_map routes every request by key",
          "[handler_map][dispatcher][unit]") {
    std::atomic<int> resized{0};
    std::atomic<int> emailed{0};
    std::atomic<int> wrong{0};
    handler_map<task, kind> routes{key_of};
    routes
        .on(kind::resize,
            [&](task& t, std::stop_token) { (t.k == kind::resize ? resized : wrong).fetch_add(1); })
        .on(kind::email, [&](task& t) { (t.k == kind::email ? emailed : wrong).fetch_add(1); });
    workerpool::options<task> o;
    o.capacity = 32;
    o.min_workers = 2;
    o.max_workers = 2;
    dispatcher<task> pool(std::move(routes), o);
    for (int i = 0; i < 20; ++i) {
        REQUIRE(pool.try_submit(task{i % 4 == 0 ? kind::email : kind::resize, i}) ==
                submit_status::accepted);
    }
    CHECK(pool.shutdown(10s).drained);
    CHECK(emailed.load() == 5);
    CHECK(resized.load() == 15);
    CHECK(wrong.load() == 0);
    CHECK(pool.stats().completed == 20u);
}

TEST_CASE("a request with an unknown key fails with unknown_route and is not retried",
          "[handler_map][dispatcher][failure][unit]") {
    std::atomic<int> resized{0};
    std::mutex mutex;
    std::vector<failure<task>> failures;
    handler_map<task, kind> routes{key_of};
    routes.on(kind::resize, [&](task&) { resized.fetch_add(1); });
    workerpool::options<task> o;
    o.min_workers = 1;
    o.max_workers = 1;
    o.retry.max_attempts = 4;  // would retry an ordinary error
    o.retry.initial_backoff = 0ns;
    o.on_failure = [&](failure<task>&& f) {
        std::lock_guard lock(mutex);
        failures.push_back(std::move(f));
    };
    dispatcher<task> pool(std::move(routes), o);
    REQUIRE(pool.try_submit(task{kind::audit, 7}) == submit_status::accepted);
    REQUIRE(pool.try_submit(task{kind::resize, 8}) == submit_status::accepted);
    REQUIRE(eventually([&] {
        std::lock_guard lock(mutex);
        return failures.size() == 1u;
    }));
    CHECK(pool.shutdown(10s).drained);

    CHECK(resized.load() == 1);  // the pool went on after the unknown route
    REQUIRE(failures.size() == 1u);
    CHECK(failures[0].request.id == 7);
    CHECK(failures[0].reason == failure_reason::error);
    CHECK(failures[0].attempts == 1u);
    REQUIRE(failures[0].error != nullptr);
    std::string message;
    try {
        std::rethrow_exception(failures[0].error);
    } catch (const unknown_route& e) {
        message = e.what();
    } catch (...) {
        message = "<not an unknown_route>";
    }
    CHECK(message.find("no handler for key 2") != std::string::npos);
    const auto s = pool.stats();
    CHECK(s.retried == 0u);
    CHECK(s.failed == 1u);
    CHECK(s.completed == 1u);
}
