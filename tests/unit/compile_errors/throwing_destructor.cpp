// Must NOT compile (see check.sh): a Request whose destructor may throw. With -DCONTROL the
// destructor is noexcept and the file must compile.

#include <workerpool/dispatcher.hpp>

#ifdef CONTROL
#define WORKERPOOL_TEST_DESTRUCTOR_NOEXCEPT noexcept
#else
#define WORKERPOOL_TEST_DESTRUCTOR_NOEXCEPT noexcept(false)
#endif

struct request {
    int id = 0;
    request() = default;
    request(const request&) = default;
    request(request&& other) noexcept : id(other.id) {}
    request& operator=(const request&) = default;
    request& operator=(request&&) = default;
    ~request() WORKERPOOL_TEST_DESTRUCTOR_NOEXCEPT {}  // NOLINT(modernize-use-equals-default)
};

int main() {
    workerpool::dispatcher<request> pool([](request&) {});
    return 0;
}
