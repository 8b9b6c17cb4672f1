// handler_map routes that carry their own job_options (issue 17): what a route's requests get
// where their own job_options leave a field at zero, field by field, and a pool whose handler has
// no route options left as it was.

#include <workerpool/detail/route_options.hpp>
#include <workerpool/dispatcher.hpp>
#include <workerpool/handler_map.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <stdexcept>
#include <stop_token>

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

    const auto plain = [](page&) {};
    CHECK(same(source::of(&plain).apply(page{}, own), own));

    handler_map<page, kind> without{key_of};
    without.on(kind::fetch, [](page&) {});
    CHECK(same(source::of(&without).apply(page{kind::fetch}, own), own));

    handler_map<page, kind> with{key_of};
    with.on(kind::fetch, [](page&) {}, {.timeout = 1s, .max_attempts = 4});
    CHECK(
        same(source::of(&with).apply(page{kind::fetch}, own), {.timeout = 7s, .max_attempts = 4}));
    CHECK(same(source::of(&with).apply(page{kind::parse}, own), own));
}
