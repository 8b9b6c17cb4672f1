// libFuzzer target: turns bytes into options and a sequence of API calls.
//
// Invalid options must throw std::invalid_argument naming the field; every valid sequence must end
// without a crash or a hang, and with the accounting identity intact: every accepted request ends
// exactly once, completed (on_success), failed (on_failure) or handed back by shutdown.
//
// Build and run: see tests/fuzz/README.md (CI runs it for 60 s from tests/fuzz/corpus).
#include <workerpool/workerpool.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <stop_token>
#include <thread>

namespace {

using namespace std::chrono_literals;

class byte_reader {
public:
    byte_reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    std::uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
    [[nodiscard]] bool empty() const { return pos_ >= size_; }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

struct request {
    std::uint32_t id;
    std::uint8_t behaviour;
};

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_dispatcher: invariant violated: %s\n", what);
        std::abort();
    }
}

void check_names_field(const std::invalid_argument& e) {
    check(std::strstr(e.what(), "workerpool: options.") != nullptr,
          "invalid_argument must name the options field");
}

// Cooperative handler behaviours, chosen by the request: never ignores its token, so shutdown
// always completes and the test stays bounded in time.
void handle(request& r, const std::stop_token& st) {
    switch (r.behaviour % 5) {
    case 0:
        return;
    case 1:
        throw std::runtime_error("fuzz: std exception");
    case 2:
        throw 42;  // not a std::exception
    case 3:
        throw workerpool::permanent_error("fuzz: permanent");
    default:
        for (int i = 0; i < 20 && !st.stop_requested(); ++i) {
            std::this_thread::sleep_for(100us);
        }
        if (st.stop_requested()) {
            throw std::runtime_error("fuzz: stopped");
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    byte_reader in(data, size);
    std::atomic<std::uint64_t> succeeded{0};
    std::atomic<std::uint64_t> failed{0};
    std::uint64_t accepted = 0;
    std::uint64_t unprocessed = 0;
    {
        workerpool::options<request> o;
        o.capacity = in.u8() % 20;  // 0 is invalid
        o.min_workers = in.u8() % 4;
        o.max_workers = in.u8() % 5;                                    // 0 or < min is invalid
        o.scale_up_depth = in.u8() % 8;                                 // 0 is invalid
        o.scale_down_ratio = static_cast<double>(in.u8() % 13) / 10.0;  // 0 and > 1 are invalid
        o.scale_down_cooldown = std::chrono::milliseconds(in.u8() % 20);
        o.scale_interval = std::chrono::milliseconds(in.u8() % 6);  // 0 is invalid
        o.idle_keep_alive = std::chrono::milliseconds(static_cast<int>(in.u8() % 30) - 2);
        o.default_timeout = std::chrono::milliseconds(static_cast<int>(in.u8() % 8) - 1);
        o.stuck_grace = std::chrono::milliseconds(in.u8() % 10);
        o.stuck_allowance = in.u8() % 3;
        o.spin_before_sleep = std::chrono::microseconds(in.u8() % 60);
        o.destructor_grace = std::chrono::milliseconds(in.u8() % 10);
        o.latency_sample_every = in.u8() % 4;
        o.retry.max_attempts = in.u8() % 4;  // 0 is invalid
        o.retry.initial_backoff = std::chrono::microseconds(static_cast<int>(in.u8() % 200) - 5);
        o.retry.multiplier = static_cast<double>(in.u8() % 30) / 10.0;  // < 1 is invalid
        o.retry.max_backoff = std::chrono::microseconds(in.u8() % 200 * 10);
        o.on_success = [&succeeded](request&) {
            succeeded.fetch_add(1, std::memory_order_relaxed);
        };
        o.on_failure = [&failed](workerpool::failure<request>&&) {
            failed.fetch_add(1, std::memory_order_relaxed);
        };
        const bool throwing_observer = (in.u8() & 1) != 0;
        if (throwing_observer) {
            o.on_event = [](const workerpool::event&) { throw 1; };  // must be swallowed
        }

        try {
            workerpool::dispatcher<request> pool{
                [](request& r, std::stop_token st) { handle(r, st); }, o};
            std::uint32_t next_id = 0;
            for (int ops = 0; ops < 64 && !in.empty(); ++ops) {
                const std::uint8_t op = in.u8();
                const std::uint8_t arg = in.u8();
                request r{next_id, arg};
                workerpool::submit_status s = workerpool::submit_status::full;
                switch (op % 9) {
                case 0:
                case 1:
                    s = pool.try_submit(std::move(r));
                    break;
                case 2:
                    s = pool.submit_for(std::move(r), std::chrono::microseconds(arg * 4));
                    break;
                case 3:
                    s = pool.submit(
                        std::move(r),
                        workerpool::job_options{std::chrono::milliseconds(arg % 4), arg % 3u, {}});
                    break;
                case 4:
                    (void)pool.add_worker();
                    break;
                case 5:
                    (void)pool.remove_worker();
                    break;
                case 6:
                    try {
                        pool.set_worker_limits(arg % 4, (arg >> 2) % 5);
                    } catch (const std::invalid_argument& e) {
                        check(std::strstr(e.what(), "workerpool: options.") != nullptr,
                              "set_worker_limits must name the field");
                    }
                    break;
                case 7: {
                    const workerpool::stats_snapshot st = pool.stats();
                    check(st.workers <= 4 + 3, "workers within max_workers + stuck_allowance");
                    break;
                }
                default:
                    (void)pool.wait_idle_for(std::chrono::microseconds(arg * 10));
                    break;
                }
                if (s == workerpool::submit_status::accepted) {
                    ++accepted;
                    ++next_id;
                }
            }
            const auto report = pool.shutdown(std::chrono::milliseconds(in.u8() % 5));
            unprocessed = report.unprocessed.size();
            check(pool.shutdown(1s).unprocessed.empty(),
                  "a second shutdown returns an empty report");
            check(pool.try_submit(request{0, 0}) == workerpool::submit_status::closed,
                  "submit after shutdown returns closed");
        } catch (const std::invalid_argument& e) {
            check_names_field(e);
            return 0;
        }
    }
    // The pool is destroyed: every thread joined, every callback delivered.
    check(accepted == succeeded.load() + failed.load() + unprocessed,
          "accepted == completed + failed + unprocessed");
    return 0;
}
