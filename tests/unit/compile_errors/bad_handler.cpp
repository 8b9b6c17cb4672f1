// Must NOT compile (see check.sh): a handler whose signature the dispatcher cannot call.
// check.sh builds each VARIANT and expects the dispatcher's static_assert message; VARIANT 0 is
// the control that must compile, so that a broken include path cannot pass for the error.

#include <workerpool/dispatcher.hpp>

#include <stop_token>
#include <string>

struct request {
    int id = 0;
};

#ifndef VARIANT
#define VARIANT 1
#endif

int main() {
#if VARIANT == 0
    auto handler = [](request&, std::stop_token) {};  // control: a valid handler
#elif VARIANT == 1
    auto handler = [](request&&) {};  // takes an rvalue: the pool passes an lvalue
#elif VARIANT == 2
    auto handler = [](request&, int) {};  // a second parameter that is not a stop_token
#elif VARIANT == 3
    auto handler = [](std::string&) {};  // the wrong request type
#elif VARIANT == 4
    auto handler = [](request&) {};  // returns nothing where the pool's Result is an int
#elif VARIANT == 5
    auto handler = [](request&) { return std::string("x"); };  // not convertible to int
#elif VARIANT == 10
    auto handler = [](request& r) { return r.id; };  // control: returns the pool's Result
#elif VARIANT == 11
    auto handler = [](request& r) { return static_cast<short>(r.id); };  // control: converts
#else
#error "unknown VARIANT"
#endif
#if VARIANT >= 4
    workerpool::dispatcher<request, int> pool(handler);
#else
    workerpool::dispatcher<request> pool(handler);
#endif
    return 0;
}
