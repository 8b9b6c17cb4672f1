// Must NOT compile (see check.sh): a Request whose move constructor may throw. With -DCONTROL the
// move constructor is noexcept and the file must compile.

#include <workerpool/dispatcher.hpp>

#ifdef CONTROL
#define WORKERPOOL_TEST_MOVE_NOEXCEPT noexcept
#else
#define WORKERPOOL_TEST_MOVE_NOEXCEPT noexcept(false)
#endif

struct request {
    int id = 0;
    request() = default;
    request(const request&) = default;
    request(request&& other) WORKERPOOL_TEST_MOVE_NOEXCEPT : id(other.id) {}
    request& operator=(const request&) = default;
    request& operator=(request&&) = default;
    ~request() = default;
};

int main() {
    workerpool::dispatcher<request> pool([](request&) {});
    return 0;
}
