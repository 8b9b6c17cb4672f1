// Must NOT compile (see check.sh): a request passed to submit, try_submit or submit_for (or a
// _tracked form) as an lvalue. check.sh builds each VARIANT and expects the message that says to
// pass std::move(request); VARIANT 0 is the control that must compile.

#include <workerpool/dispatcher.hpp>
#include <workerpool/request_group.hpp>

#include <chrono>
#include <string>
#include <utility>

struct request {
    std::string url;
};

#ifndef VARIANT
#define VARIANT 1
#endif

int main() {
    workerpool::dispatcher<request> pool([](request&) {});
    request r{"https://example.com/"};
    [[maybe_unused]] const request kept{"https://example.com/kept"};
#if VARIANT == 0
    // control: rvalues, a moved lvalue and an explicit copy all compile
    (void)pool.submit(std::move(r));
    (void)pool.try_submit(request{"a"});
    (void)pool.submit_for(request(kept), std::chrono::milliseconds(1));
    (void)pool.try_submit_tracked(request(kept));
    (void)pool.submit_for_tracked(std::move(r), std::chrono::milliseconds(1));
#elif VARIANT == 1
    (void)pool.submit(r);
#elif VARIANT == 2
    (void)pool.try_submit(r);
#elif VARIANT == 3
    (void)pool.submit_for(r, std::chrono::milliseconds(1));
#elif VARIANT == 4
    (void)pool.submit(kept);  // a const lvalue
#elif VARIANT == 5
    (void)pool.try_submit_tracked(r);
#elif VARIANT == 6
    (void)pool.submit_tracked(kept);
#elif VARIANT == 7
    (void)pool.submit_for_tracked(r, std::chrono::milliseconds(1));
#elif VARIANT == 8
    workerpool::request_group<request> group(pool);
    (void)group.submit(r);
#else
#error "unknown VARIANT"
#endif
    return 0;
}
