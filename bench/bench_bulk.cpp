// Bulk submission against one-by-one submit (issue 18 §3), in one binary, same pool, same run:
// one producer, two workers, no-op requests, the dispatcher as bench_pool's `workerpool` (default
// options, default_timeout = 10 s, the handler taking its stop_token by const&).
//
//   BM_submit_noop_1p2w/one_by_one   submit(job) per request
//   BM_submit_noop_1p2w/bulk64       submit_bulk(span of 64 jobs)
//   BM_submit_noop_1p2w_lanes/...    the same with `priority_lanes = 2`, so that every request
//                                    goes through the scheduler (its lock) instead of the ring
//
// Each iteration submits WORKERPOOL_BENCH_REQUESTS requests (default 200'000) and waits until the
// last handler returned; items_per_second is requests per second through the pool. Compare the
// two with scripts/bench_ab.py-style interleaving: run the binary several times.

#include <workerpool/workerpool.hpp>

#include "peers/workerpool_pool.hpp"
#include "support.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <stop_token>
#include <string>

namespace wb = workerpool_bench;

namespace {

constexpr std::size_t span_size = 64;

template <bool Bulk, std::size_t Lanes = 1>
void bm_submit(benchmark::State& state) {
    const std::uint64_t n = wb::requests_per_iteration() / span_size * span_size;
    wb::bench_context ctx(wb::work_kind::noop);
    auto options = wb::workerpool_options(2);
    options.priority_lanes = Lanes;
    workerpool::dispatcher<wb::job> pool(
        [handler = wb::bench_handler{&ctx}](wb::job& j, const std::stop_token&) { handler(j); },
        options);
    std::array<wb::job, span_size> batch{};
    std::uint64_t target = 0;
    for (auto _ : state) {
        target += n;
        const auto t0 = wb::clock_type::now();
        if constexpr (Bulk) {
            for (std::uint64_t i = 0; i < n; i += span_size) {
                for (std::size_t k = 0; k < span_size; ++k) {
                    batch[k] = wb::job{i + k};
                }
                if (pool.submit_bulk(batch) != span_size) {
                    wb::die("submit_bulk took fewer than all of an open pool's requests");
                }
            }
        } else {
            for (std::uint64_t i = 0; i < n; ++i) {
                if (pool.submit(wb::job{i}) != workerpool::submit_status::accepted) {
                    wb::die("submit refused a request of an open pool");
                }
            }
        }
        ctx.done.wait_for(target);
        state.SetIterationTime(std::chrono::duration<double>(wb::clock_type::now() - t0).count());
    }
    (void)pool.shutdown(std::chrono::seconds(30));
    state.SetItemsProcessed(static_cast<std::int64_t>(target));
}

BENCHMARK(bm_submit<false>)->Name("BM_submit_noop_1p2w/one_by_one")->UseManualTime();
BENCHMARK(bm_submit<true>)->Name("BM_submit_noop_1p2w/bulk64")->UseManualTime();
BENCHMARK(bm_submit<false, 2>)->Name("BM_submit_noop_1p2w_lanes/one_by_one")->UseManualTime();
BENCHMARK(bm_submit<true, 2>)->Name("BM_submit_noop_1p2w_lanes/bulk64")->UseManualTime();

}  // namespace
