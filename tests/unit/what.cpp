// workerpool::what(exception_ptr) (issue 17): the message of a failure's exception without the
// rethrow-and-catch every on_failure used to write.

#include <workerpool/dispatcher.hpp>
#include <workerpool/retry.hpp>
#include <workerpool/status.hpp>

#include "support/catch.hpp"

#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

// A std::exception that is none of the standard ones, with its own what().
struct parse_error : std::exception {
    [[nodiscard]] const char* what() const noexcept override { return "line 3: unexpected '}'"; }
};

template <class E>
std::exception_ptr thrown(E e) {
    try {
        throw e;
    } catch (...) {
        return std::current_exception();
    }
}

struct job {
    int id = 0;
};

}  // namespace

TEST_CASE("what returns the message of any std::exception", "[what][unit]") {
    CHECK(workerpool::what(thrown(std::runtime_error("503 Service Unavailable"))) ==
          "503 Service Unavailable");
    CHECK(workerpool::what(thrown(std::invalid_argument("bad id"))) == "bad id");
    CHECK(workerpool::what(thrown(workerpool::permanent_error("not HTML"))) == "not HTML");
    CHECK(workerpool::what(thrown(parse_error{})) == "line 3: unexpected '}'");
    CHECK(workerpool::what(std::make_exception_ptr(std::out_of_range("index 7"))) == "index 7");
}

TEST_CASE("what returns a fixed text for an exception not derived from std::exception",
          "[what][unit]") {
    const std::string fixed = "unknown exception (not derived from std::exception)";
    CHECK(workerpool::what(thrown(42)) == fixed);
    CHECK(workerpool::what(thrown("a C string")) == fixed);
    CHECK(workerpool::what(thrown(std::string("a std::string"))) == fixed);
}

TEST_CASE("what returns an empty string for a null exception_ptr", "[what][unit]") {
    CHECK(workerpool::what(std::exception_ptr{}).empty());
}

TEST_CASE("what gives on_failure the handler's message", "[what][dispatcher][unit]") {
    std::mutex m;
    std::vector<std::string> messages;  // guarded by m
    workerpool::options<job> opts;
    opts.on_failure = [&](workerpool::failure<job>&& f) {
        std::lock_guard lock(m);
        messages.push_back(workerpool::what(f.error));
    };
    {
        workerpool::dispatcher<job> pool{[](job& j) {
                                             if (j.id == 1) {
                                                 throw std::runtime_error("host down");
                                             }
                                             throw 7;
                                         },
                                         opts};
        REQUIRE(pool.submit(job{1}) == workerpool::submit_status::accepted);
        REQUIRE(pool.submit(job{2}) == workerpool::submit_status::accepted);
        pool.wait_idle();
        (void)pool.shutdown(1s);
    }
    std::lock_guard lock(m);
    REQUIRE(messages.size() == 2);
    CHECK(((messages[0] == "host down" &&
            messages[1] == "unknown exception (not derived from std::exception)") ||
           (messages[1] == "host down" &&
            messages[0] == "unknown exception (not derived from std::exception)")));
}
