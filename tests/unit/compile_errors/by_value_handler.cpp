// Must NOT compile (see check.sh): a handler that takes the request by value, where its
// parameter type can be seen (a function pointer, a lambda or function object with one
// non-template operator()). It would work on a copy and lose what it writes into the request.
// check.sh builds each VARIANT and expects the message that says to take Request&; VARIANTs
// 0, 10, 11 and 12 are controls that must compile.

#include <workerpool/dispatcher.hpp>
#include <workerpool/handler_map.hpp>

#include <functional>
#include <stop_token>

struct request {
    int kind = 0;
    unsigned attempts = 0;
};

#ifndef VARIANT
#define VARIANT 1
#endif

namespace {
[[maybe_unused]] void by_value(request r, std::stop_token) {
    ++r.attempts;  // lost: r is a copy
}
struct by_value_object {
    void operator()(request r) const noexcept { ++r.attempts; }
};
}  // namespace

int main() {
#if VARIANT == 0
    workerpool::dispatcher<request> pool([](request& r) { ++r.attempts; });  // control
#elif VARIANT == 1
    workerpool::dispatcher<request> pool([](request r) { ++r.attempts; });
#elif VARIANT == 2
    workerpool::dispatcher<request> pool(&by_value);
#elif VARIANT == 3
    workerpool::dispatcher<request> pool(by_value_object{});
#elif VARIANT == 4
    workerpool::dispatcher<request> pool(std::function<void(request)>([](request) {}));
#elif VARIANT == 5
    workerpool::dispatcher<request> pool([](const request r, std::stop_token) mutable { (void)r; });
#elif VARIANT == 6
    workerpool::handler_map<request, int> routes{[](const request& r) { return r.kind; }};
    routes.on(1, [](request r) { ++r.attempts; });
#elif VARIANT == 10
    // control: a handler that only reads may take const Request&
    workerpool::dispatcher<request> pool([](const request& r) { (void)r; });
#elif VARIANT == 11
    // control: a generic lambda's parameter cannot be seen; auto& compiles
    workerpool::dispatcher<request> pool([](auto& r) { ++r.attempts; });
#elif VARIANT == 12
    // control: handler_map routes taking Request&, with and without the token
    workerpool::handler_map<request, int> routes{[](const request& r) { return r.kind; }};
    routes.on(1, [](request& r) { ++r.attempts; }).on(2, [](request&, const std::stop_token&) {});
    workerpool::dispatcher<request> pool(std::move(routes));
#else
#error "unknown VARIANT"
#endif
    return 0;
}
