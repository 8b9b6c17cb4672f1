// The Go article's worker pool, done right: a crawler's ingestion job whose typed requests (fetch a
// page, parse it, store it) are routed by type to one handler each, arriving in bursts with quiet
// gaps in between, so the pool visibly grows under a backlog and shrinks back when it clears.
//
// The load is what a crawler meets: some fetches are slow; some hosts answer 503 for a while
// (retried with backoff) or for good; some never answer at all, and only the attempt's deadline,
// through its stop token, ends the wait; some documents are not HTML (a permanent error, never
// retried); some links are ftp://, which nothing handles. A sitemap larger than the queue meets
// back-pressure instead of being dropped. A status line shows the pool while it runs; the summary
// accounts for every accepted request, and the program fails if one is missing.
//
// Run: ./dispatch_by_type [--seconds N] [--timeline FILE.csv] [--metrics FILE.prom]
#include <workerpool/workerpool.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

#if __has_include(<unistd.h>)
#include <unistd.h>  // isatty
#endif

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

enum class kind : std::uint8_t { fetch, parse, store, ftp };
constexpr std::size_t kinds = 4;

std::size_t index_of(kind k) {
    return static_cast<std::size_t>(k);
}

struct request {
    kind type;
    std::uint64_t id;
    unsigned attempt = 0;  // the request travels with its retries, so it can count them itself
};

// Deterministic per-request dice (splitmix64), so handlers need no shared random generator and a
// request that retries meets the same host.
std::uint64_t mix(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
double dice(std::uint64_t id, std::uint64_t salt) {
    return static_cast<double>(mix(id * 8 + salt) >> 11) * 0x1p-53;  // uniform in [0, 1)
}

// Waits like a network call that takes `d`, but returns as soon as the attempt's token is stopped
// (deadline or shutdown) and then throws: a cooperative handler gives its thread back.
void network_wait(std::chrono::microseconds d, const std::stop_token& stop) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    (void)cv.wait_for(lock, stop, d, [] { return false; });
    if (stop.stop_requested()) {
        throw std::runtime_error("gave up waiting: the attempt was stopped");
    }
}

// CPU work (parsing) that looks at its token between slices, as long loops should.
void cpu_work(std::chrono::microseconds d, const std::stop_token& stop) {
    const auto end = clock_type::now() + d;
    while (clock_type::now() < end) {
        if (stop.stop_requested()) {
            throw std::runtime_error("parse stopped");
        }
        std::this_thread::yield();
    }
}

// The handlers. Probabilities are per request; the timeouts are set per kind at submission.
void fetch_page(request& r, const std::stop_token& stop) {
    ++r.attempt;
    const double host = dice(r.id, 1);
    if (host < 0.003) {
        network_wait(24h, stop);  // a tarpit: never answers; each attempt ends at its deadline
    } else if (host < 0.013) {
        if (r.attempt == 1) {
            network_wait(24h, stop);  // a lost connection: hangs once, answers the retry
        }
    } else if (host < 0.016) {
        throw std::runtime_error("503 Service Unavailable");  // down for good: retries run out
    } else if (host < 0.046) {
        if (r.attempt == 1) {
            throw std::runtime_error("503 Service Unavailable");  // overloaded: the retry works
        }
    }
    const double t = dice(r.id, 2);
    const bool slow = dice(r.id, 3) < 0.03;
    network_wait(slow ? std::chrono::microseconds(60'000 + static_cast<int>(t * 120'000))
                      : std::chrono::microseconds(4'000 + static_cast<int>(t * 12'000)),
                 stop);
}

void parse_page(request& r, const std::stop_token& stop) {
    cpu_work(std::chrono::microseconds(100 + static_cast<int>(dice(r.id, 4) * 200)), stop);
    if (dice(r.id, 5) < 0.01) {
        throw workerpool::permanent_error("not an HTML document");  // no retry can fix it
    }
}

void store_page(request& r, const std::stop_token& stop) {
    ++r.attempt;
    if (dice(r.id, 6) < 0.02 && r.attempt == 1) {
        throw std::runtime_error("deadlock detected");  // transient: the retry goes through
    }
    network_wait(std::chrono::microseconds(2'000 + static_cast<int>(dice(r.id, 7) * 4'000)), stop);
}

// The load, in phases of a run of `seconds`: a steady trickle, a burst above what the pool can
// take, a quiet gap to shrink in, a sitemap dumped at once (more than the queue holds), quiet
// again, and a last burst that the end of the job cuts short: shutdown gets what is left.
struct phase {
    const char* name;
    double until;      // end, as a fraction of the run; a dump ends when it is all submitted
    double rate;       // requests per second, or 0 for a dump
    std::size_t dump;  // requests per second of the run, submitted at once
};
constexpr std::array<phase, 6> plan{{
    {"trickle", 0.08, 100, 0},
    {"burst", 0.23, 2000, 0},
    {"trickle", 0.45, 100, 0},
    {"sitemap", 0.45, 0, 300},
    {"trickle", 0.85, 100, 0},
    {"burst", 0.95, 2000, 0},
}};
// The job's end: what the workers cannot finish within this grace is handed back, not lost.
constexpr auto shutdown_grace = 500ms;

int usage(std::FILE* to, int code) {
    std::fprintf(
        to, "usage: dispatch_by_type [--seconds N] [--timeline FILE.csv] [--metrics FILE.prom]\n"
            "  --seconds N          length of the run, 2..3600 (default 10)\n"
            "  --timeline FILE.csv  record queue depth, workers, ... every 25 ms\n"
            "  --metrics FILE.prom  keep the pool's stats in FILE.prom, in Prometheus's text\n"
            "                       format, rewritten every 0.5 s (for a node exporter's\n"
            "                       textfile collector)\n");
    return code;
}

// Replaces `path` with `text` in one step (a temporary file, then rename), so that a reader such
// as the node exporter's textfile collector never sees half a file.
bool write_atomically(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) {
        return false;
    }
    const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (std::fclose(f) != 0 || !written) {
        return false;
    }
    return std::rename(tmp.c_str(), path.c_str()) == 0;
}

double seconds_since(clock_type::time_point t0, clock_type::time_point t) {
    return std::chrono::duration<double>(t - t0).count();
}

std::string format_duration(std::chrono::nanoseconds d) {
    char buf[32];
    const double us = std::chrono::duration<double, std::micro>(d).count();
    if (us < 1000) {
        std::snprintf(buf, sizeof buf, "%.0f us", us);
    } else if (us < 10'000) {
        std::snprintf(buf, sizeof buf, "%.1f ms", us / 1000);
    } else if (us < 1'000'000) {
        std::snprintf(buf, sizeof buf, "%.0f ms", us / 1000);
    } else {
        std::snprintf(buf, sizeof buf, "%.2f s", us / 1'000'000);
    }
    return buf;
}

unsigned long long ull(std::uint64_t v) {
    return static_cast<unsigned long long>(v);
}

}  // namespace

int main(int argc, char** argv) {
    int seconds = 10;
    const char* timeline_path = nullptr;
    const char* metrics_path = nullptr;
    for (int i = 1; i < argc; ++i) {
        const char* arg = argv[i];
        if (std::strcmp(arg, "--help") == 0 || std::strcmp(arg, "-h") == 0) {
            return usage(stdout, 0);
        }
        if (i + 1 >= argc) {
            return usage(stderr, 2);
        }
        if (std::strcmp(arg, "--seconds") == 0) {
            char* end = nullptr;
            const long n = std::strtol(argv[++i], &end, 10);
            if (*end != '\0' || n < 2 || n > 3600) {
                return usage(stderr, 2);
            }
            seconds = static_cast<int>(n);
        } else if (std::strcmp(arg, "--timeline") == 0) {
            timeline_path = argv[++i];
        } else if (std::strcmp(arg, "--metrics") == 0) {
            metrics_path = argv[++i];
        } else {
            return usage(stderr, 2);
        }
    }
    std::FILE* timeline = nullptr;
    if (timeline_path != nullptr) {
        timeline = std::fopen(timeline_path, "w");
        if (timeline == nullptr) {
            std::fprintf(stderr, "dispatch_by_type: cannot write %s: %s\n", timeline_path,
                         std::strerror(errno));
            return 1;
        }
        std::fprintf(timeline, "elapsed_ms,queue_depth,workers,in_flight,completed,failed,"
                               "retries,timed_out,phase\n");
    }
    // A terminal gets its status line redrawn in place; a pipe or a file gets plain lines.
#if __has_include(<unistd.h>)
    const bool live = isatty(fileno(stdout)) != 0;
#else
    const bool live = false;
#endif

    // Where requests ended, by kind and cause; written on pool threads, read at the end.
    std::array<std::atomic<std::uint64_t>, kinds> completed_by_kind{};
    std::atomic<std::uint64_t> timed_out{0}, host_down{0}, not_html{0}, no_route{0}, cancelled{0},
        other_failure{0};

    // Each route carries its requests' job_options: parsing and storing are quick, so they get a
    // tighter deadline than a fetch, which takes the pool's default_timeout below.
    workerpool::handler_map<request, kind> routes{[](const request& r) { return r.type; }};
    routes.on(kind::fetch, fetch_page)
        .on(kind::parse, parse_page, {.timeout = 50ms})
        .on(kind::store, store_page, {.timeout = 100ms});
    // kind::ftp has no route on purpose: such requests fail with unknown_route, never retried.

    workerpool::options<request> opts;
    opts.capacity = 2048;  // about a second of work at full size; the sitemap is bigger
    opts.min_workers = 2;
    opts.max_workers = 16;  // what the (imaginary) remote hosts and database can take
    opts.scale_up_depth = 32;
    opts.scale_down_cooldown = 500ms;
    opts.idle_keep_alive = 2s;
    opts.default_timeout = 250ms;  // above the slowest healthy fetch (180 ms)
    opts.retry.max_attempts = 3;
    opts.retry.initial_backoff = 50ms;
    opts.retry.max_backoff = 1s;
    opts.on_success = [&](request& r) {
        completed_by_kind[index_of(r.type)].fetch_add(1, std::memory_order_relaxed);
    };
    opts.on_failure = [&](workerpool::failure<request>&& f) {
        std::atomic<std::uint64_t>* cause = &other_failure;
        if (f.reason == workerpool::failure_reason::timed_out) {
            cause = &timed_out;
        } else if (f.reason == workerpool::failure_reason::cancelled) {
            cause = &cancelled;
        } else if (f.error) {
            try {
                std::rethrow_exception(f.error);
            } catch (const workerpool::unknown_route&) {
                cause = &no_route;
            } catch (const workerpool::permanent_error&) {
                cause = &not_html;
            } catch (const std::runtime_error&) {
                cause = &host_down;
            } catch (...) {
            }
        }
        cause->fetch_add(1, std::memory_order_relaxed);
    };

    workerpool::dispatcher<request> pool{std::move(routes), opts};
    const auto t0 = clock_type::now();
    const auto run_length = std::chrono::duration<double>(seconds);

    // The current phase, set by the producer (main thread), read by the reporter; relaxed, as it
    // only labels the status line.
    std::atomic<std::size_t> phase_index{0};
    auto phase_name = [](std::size_t i) { return i < plan.size() ? plan[i].name : "shutdown"; };

    std::printf("dispatch_by_type: a %d s crawl by %zu..%zu workers through a queue of %zu\n"
                "load: trickles of %.0f/s, bursts of %.0f/s, a sitemap of %zu at once;\n"
                "      then shutdown, with a %lld ms grace\n\n",
                seconds, opts.min_workers, opts.max_workers, opts.capacity, plan[0].rate,
                plan[1].rate, plan[3].dump * static_cast<std::size_t>(seconds),
                static_cast<long long>(shutdown_grace.count()));
    std::printf("%6s %-8s %5s %5s %7s %9s %6s %7s %8s %6s\n", "time", "phase", "req/s", "queue",
                "workers", "in flight", "done", "retries", "timeouts", "failed");
    std::fflush(stdout);

    // The reporter: samples stats() every 25 ms for the timeline and the status line, and every
    // 0.5 s rewrites the metrics file. It only reads the pool, so it can run beside the producer
    // and through the shutdown.
    bool metrics_failed = false;  // written by the reporter; read after it is joined
    std::jthread reporter([&](const std::stop_token& stop) {
        constexpr auto tick = 25ms;
        constexpr std::size_t rate_window = 20;  // ticks: the rate is over the last 0.5 s
        std::array<std::pair<double, std::uint64_t>, rate_window> history{};
        std::size_t ticks = 0;
        std::size_t shown_phase = 0;
        auto next = clock_type::now();
        for (;;) {
            const bool last = stop.stop_requested();  // one more sample after the stop, at the end
            const auto s = pool.stats();
            const double t = seconds_since(t0, clock_type::now());
            const std::size_t now_phase = phase_index.load(std::memory_order_relaxed);
            const std::uint64_t finished = s.completed + s.failed;
            const auto [then_t, then_finished] =
                history[ticks >= rate_window ? ticks % rate_window : 0];
            const double rate =
                t > then_t ? static_cast<double>(finished - then_finished) / (t - then_t) : 0.0;
            history[ticks % rate_window] = {t, finished};
            if (timeline != nullptr) {
                std::fprintf(timeline, "%.0f,%zu,%zu,%zu,%llu,%llu,%llu,%llu,%s\n", t * 1000,
                             s.queue_depth, s.workers, s.in_flight, ull(s.completed), ull(s.failed),
                             ull(s.retried), ull(s.timed_out),
                             last ? "stopped" : phase_name(now_phase));
            }
            if (metrics_path != nullptr && (ticks % 20 == 0 || last) &&
                !write_atomically(metrics_path, workerpool::to_prometheus(s, "dispatch_by_type"))) {
                metrics_failed = true;
            }
            // A terminal gets the line redrawn every 100 ms, and keeps the last line of each
            // phase; a pipe or a file gets a plain line every 0.5 s.
            const bool phase_changed = now_phase != shown_phase;
            shown_phase = now_phase;
            if (live ? (ticks % 4 == 0 || phase_changed || last) : (ticks % 20 == 0 || last)) {
                if (live) {
                    std::fputs(phase_changed ? "\n" : "\r\033[K", stdout);
                }
                std::printf("%5.1fs %-8s %5.0f %5zu %7zu %9zu %6llu %7llu %8llu %6llu%s", t,
                            last ? "stopped" : phase_name(now_phase), rate, s.queue_depth,
                            s.workers, s.in_flight, ull(s.completed), ull(s.retried),
                            ull(s.timed_out), ull(s.failed), live && !last ? "" : "\n");
                std::fflush(stdout);
            }
            if (last) {
                break;
            }
            ++ticks;
            next += tick;
            std::this_thread::sleep_until(next);
        }
    });

    // The producer: submits each phase's requests on schedule. submit() blocks while the queue is
    // full, so a sitemap bigger than the queue is paced by the pool, never dropped.
    std::uint64_t accepted = 0;
    std::array<std::uint64_t, kinds> accepted_by_kind{};
    std::uint64_t next_id = 0;
    clock_type::duration dump_time{};
    auto submit_one = [&] {
        const std::uint64_t id = next_id++;
        const double pick = dice(id, 0);
        const kind type = pick < 0.50    ? kind::fetch
                          : pick < 0.80  ? kind::parse
                          : pick < 0.998 ? kind::store
                                         : kind::ftp;
        if (pool.submit(request{type, id}) == workerpool::submit_status::accepted) {
            ++accepted;
            ++accepted_by_kind[index_of(type)];
        }
    };
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const phase& p = plan[i];
        phase_index.store(i, std::memory_order_relaxed);
        const auto end =
            t0 + std::chrono::duration_cast<clock_type::duration>(run_length * p.until);
        if (p.rate == 0) {
            const auto dump_start = clock_type::now();
            for (std::size_t n = 0; n < p.dump * static_cast<std::size_t>(seconds); ++n) {
                submit_one();
            }
            dump_time = clock_type::now() - dump_start;
            continue;
        }
        const auto gap = std::chrono::duration_cast<clock_type::duration>(
            std::chrono::duration<double>(1.0 / p.rate));
        for (auto due = clock_type::now(); due < end; due += gap) {
            std::this_thread::sleep_until(due);
            submit_one();
        }
    }

    phase_index.store(plan.size(), std::memory_order_relaxed);
    const auto report = pool.shutdown(shutdown_grace);
    reporter.request_stop();
    reporter.join();
    if (timeline != nullptr && std::fclose(timeline) != 0) {
        std::fprintf(stderr, "dispatch_by_type: error writing %s\n", timeline_path);
        return 1;
    }
    if (metrics_failed) {
        std::fprintf(stderr, "dispatch_by_type: cannot write %s\n", metrics_path);
        return 1;
    }

    // After shutdown() the counters are exact (no handler here ignores its token).
    const workerpool::stats_snapshot s = pool.stats();
    const std::uint64_t handed_back = report.unprocessed.size();
    const std::uint64_t ended = s.completed + s.failed + handed_back;
    const bool balanced = ended == accepted && s.submitted == accepted;
    auto done = [&](kind k) { return ull(completed_by_kind[index_of(k)].load()); };
    auto took = [&](kind k) { return ull(accepted_by_kind[index_of(k)]); };

    std::string causes = "timed out " + std::to_string(timed_out.load()) + ", host down " +
                         std::to_string(host_down.load()) + ", not HTML " +
                         std::to_string(not_html.load()) + ", no handler " +
                         std::to_string(no_route.load());
    if (cancelled.load() + other_failure.load() > 0) {
        causes += ", cancelled " + std::to_string(cancelled.load()) + ", other " +
                  std::to_string(other_failure.load());
    }

    std::printf("\nsummary after %.1f s\n", seconds_since(t0, clock_type::now()));
    std::printf("  accepted      %6llu  fetch %llu, parse %llu, store %llu, ftp %llu\n",
                ull(accepted), took(kind::fetch), took(kind::parse), took(kind::store),
                took(kind::ftp));
    std::printf("  completed     %6llu  fetch %llu, parse %llu, store %llu\n", ull(s.completed),
                done(kind::fetch), done(kind::parse), done(kind::store));
    std::printf("  failed        %6llu  %s\n", ull(s.failed), causes.c_str());
    std::printf("  handed back   %6llu  by shutdown: %s\n", ull(handed_back),
                report.drained ? "retries still waiting out their backoff"
                               : "queued or retrying when the grace ran out");
    std::printf("  accounting    %6llu  ended = completed + failed + handed back %s\n", ull(ended),
                balanced ? "= accepted" : "!= accepted: MISMATCH");
    std::printf(
        "  retries       %6llu  %llu attempts timed out: the deadline stopped their token\n",
        ull(s.retried), ull(s.timed_out));
    std::printf("  workers       %6zu  at peak, between %zu and %zu; %llu started, %llu retired\n",
                s.peak_workers, opts.min_workers, opts.max_workers, ull(s.scale_ups),
                ull(s.scale_downs));
    std::printf("  back-pressure %5.1fs  %s\n", std::chrono::duration<double>(dump_time).count(),
                dump_time > 50ms ? "the sitemap waited in submit() for room; none dropped"
                                 : "the sitemap fit in the queue at once");
    std::printf("  queue wait    p50 %s, p99 %s, max %s (sampled, last 5-10 s)\n",
                format_duration(s.queue_wait.p50).c_str(),
                format_duration(s.queue_wait.p99).c_str(),
                format_duration(s.queue_wait.max).c_str());
    std::printf("  run time      p50 %s, p99 %s, max %s\n", format_duration(s.run_time.p50).c_str(),
                format_duration(s.run_time.p99).c_str(), format_duration(s.run_time.max).c_str());
    if (timeline_path != nullptr) {
        std::printf("  timeline      %s (scripts/plot-timeline.sh draws it)\n", timeline_path);
    }
    if (metrics_path != nullptr) {
        std::printf("  metrics       %s (Prometheus text format, the pool's final stats)\n",
                    metrics_path);
    }
    if (!balanced) {
        std::fprintf(stderr,
                     "dispatch_by_type: accounting mismatch: accepted %llu, submitted "
                     "%llu, ended %llu\n",
                     ull(accepted), ull(s.submitted), ull(ended));
    }
    return balanced ? 0 : 1;
}
