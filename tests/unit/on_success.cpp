// options::on_success (issue 17): called with each request whose handler returned, after the
// handler, with what the handler wrote into it; it may move out of the request, which the pool
// destroys right after.

#include <workerpool/dispatcher.hpp>

#include "support/catch.hpp"
#include "support/test_util.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using workerpool::test::tracked;

struct page {
    int id = 0;
    std::unique_ptr<std::string> body;  // written by the handler, taken by on_success
    tracked life;                       // counts live request objects
};

}  // namespace

TEST_CASE("on_success gets each request whose handler returned, and may move out of it",
          "[on_success][dispatcher][unit]") {
    tracked::reset();
    std::mutex m;
    std::vector<std::unique_ptr<std::string>> bodies;  // guarded by m
    std::vector<int> failed;                           // guarded by m
    {
        workerpool::options<page> opts;
        opts.max_workers = 2;
        opts.on_success = [&](page& p) {
            std::lock_guard lock(m);
            bodies.push_back(std::move(p.body));  // the pool destroys `p` right after this
        };
        opts.on_failure = [&](workerpool::failure<page>&& f) {
            std::lock_guard lock(m);
            failed.push_back(f.request.id);
        };
        workerpool::dispatcher<page> pool{[](page& p) {
                                              if (p.id % 5 == 0) {
                                                  throw std::runtime_error("no body");
                                              }
                                              p.body = std::make_unique<std::string>(
                                                  "body " + std::to_string(p.id));
                                          },
                                          opts};
        for (int i = 1; i <= 50; ++i) {
            REQUIRE(pool.submit(page{i, nullptr, tracked(i)}) ==
                    workerpool::submit_status::accepted);
        }
        REQUIRE(pool.wait_idle_for(30s));
        // Every request has ended, and the pool keeps none: each is destroyed right after its
        // on_success (wait_idle may return a moment before the last destruction).
        CHECK(workerpool::test::eventually([] { return tracked::live.load() == 0; }));
        (void)pool.shutdown(1s);
    }
    CHECK(tracked::live.load() == 0);
    CHECK(tracked::misuse.load() == 0);

    std::lock_guard lock(m);
    REQUIRE(bodies.size() == 40u);  // 50 requests, every fifth failed
    std::vector<std::string> got;
    for (const auto& b : bodies) {
        REQUIRE(b != nullptr);  // on_success saw what the handler wrote
        got.push_back(*b);
    }
    std::sort(got.begin(), got.end());
    CHECK(std::adjacent_find(got.begin(), got.end()) == got.end());  // each once
    CHECK(failed.size() == 10u);                                     // never passed to on_success
}
