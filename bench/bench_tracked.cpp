// What tracking a request costs (issue 19), in one binary, same pool, same run: one producer, two
// workers, no-op requests, the dispatcher as bench_pool's `workerpool` (default options,
// default_timeout = 10 s, the handler taking its stop_token by const&).
//
//   BM_tracked_noop_1p2w/plain           submit(job) per request
//   BM_tracked_noop_1p2w/tracked         submit_tracked(job), the handle dropped at once
//   BM_tracked_noop_1p2w/tracked_get     submit_tracked(job), the handles kept and get() in
//                                        batches of 256, as a fan-out waits for its parts
//
// Each iteration submits WORKERPOOL_BENCH_REQUESTS requests (default 200'000) and waits until the
// last handler returned; items_per_second is requests per second through the pool. Run the binary
// several times: `scripts/bench_ab.py`'s figures are medians of interleaved rounds, these of one.

#include <workerpool/workerpool.hpp>

#include "peers/workerpool_pool.hpp"
#include "support.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <stop_token>
#include <vector>

namespace wb = workerpool_bench;

namespace {

enum class how { plain, tracked, tracked_get };

constexpr std::size_t get_batch = 256;

template <how How>
void bm_tracked(benchmark::State& state) {
    const std::uint64_t n = wb::requests_per_iteration() / get_batch * get_batch;
    wb::bench_context ctx(wb::work_kind::noop);
    workerpool::dispatcher<wb::job> pool(
        [handler = wb::bench_handler{&ctx}](wb::job& j, const std::stop_token&) { handler(j); },
        wb::workerpool_options(2));
    std::vector<workerpool::handle<>> handles;
    handles.reserve(get_batch);
    std::uint64_t target = 0;
    for (auto _ : state) {
        target += n;
        const auto t0 = wb::clock_type::now();
        for (std::uint64_t i = 0; i < n; ++i) {
            if constexpr (How == how::plain) {
                if (pool.submit(wb::job{i}) != workerpool::submit_status::accepted) {
                    wb::die("submit refused a request of an open pool");
                }
            } else {
                auto t = pool.submit_tracked(wb::job{i});
                if (t.status != workerpool::submit_status::accepted) {
                    wb::die("submit_tracked refused a request of an open pool");
                }
                if constexpr (How == how::tracked_get) {
                    handles.push_back(std::move(t.handle));
                    if (handles.size() == get_batch) {
                        for (auto& h : handles) {
                            h.get();
                        }
                        handles.clear();
                    }
                }
            }
        }
        ctx.done.wait_for(target);
        state.SetIterationTime(std::chrono::duration<double>(wb::clock_type::now() - t0).count());
    }
    (void)pool.shutdown(std::chrono::seconds(30));
    state.SetItemsProcessed(static_cast<std::int64_t>(target));
}

BENCHMARK(bm_tracked<how::plain>)->Name("BM_tracked_noop_1p2w/plain")->UseManualTime();
BENCHMARK(bm_tracked<how::tracked>)->Name("BM_tracked_noop_1p2w/tracked")->UseManualTime();
BENCHMARK(bm_tracked<how::tracked_get>)->Name("BM_tracked_noop_1p2w/tracked_get")->UseManualTime();

}  // namespace
