#pragma once

/// @file
/// `to_prometheus`: a pool's `stats_snapshot` in Prometheus's text exposition format, for a
/// scrape endpoint or a node exporter's textfile collector.

#include <workerpool/stats.hpp>

#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace workerpool {

/// One pool's figures for `to_prometheus`: the name it is exported under (the `pool` label) and
/// a snapshot of its stats.
struct named_stats {
    std::string_view pool_name;  ///< The value of the `pool` label; any text (it is escaped).
    stats_snapshot stats;        ///< What `dispatcher::stats()` returned.
};

namespace detail {

struct prometheus_scalar {
    const char* name;
    const char* type;  // "counter" or "gauge"
    const char* help;
    std::uint64_t (*value)(const stats_snapshot&);
};

// Counters end in _total (and only they do); durations are summaries in seconds.
inline constexpr std::array<prometheus_scalar, 23> prometheus_scalars{{
    {"workerpool_requests_submitted_total", "counter", "Requests accepted by a submit call.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.submitted; }},
    {"workerpool_submits_rejected_total", "counter",
     "Submit calls refused because the queue was full.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.rejected; }},
    {"workerpool_requests_completed_total", "counter",
     "Requests whose handler returned normally, late ones included.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.completed; }},
    {"workerpool_requests_failed_total", "counter",
     "Requests handed to on_failure: attempts used up, expired or cancelled.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.failed; }},
    {"workerpool_retries_total", "counter", "Attempts after the first.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.retried; }},
    {"workerpool_attempts_timed_out_total", "counter",
     "Attempts that threw after their deadline stopped their token.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.timed_out; }},
    {"workerpool_attempts_late_total", "counter",
     "Attempts that returned normally after their deadline.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.late; }},
    {"workerpool_attempts_cancelled_total", "counter",
     "Requests ended as cancelled: by shutdown stopping their token, or through their handle.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.cancelled; }},
    {"workerpool_requests_expired_total", "counter",
     "Requests dropped to on_failure because their deadline passed before they ran.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.expired; }},
    {"workerpool_callback_errors_total", "counter",
     "Exceptions thrown by the user's callbacks, swallowed by the pool.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.callback_errors; }},
    {"workerpool_scale_ups_total", "counter", "Workers added, by the scaler or add_worker.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.scale_ups; }},
    {"workerpool_scale_downs_total", "counter",
     "Workers retired, by the scaler, the idle keep-alive or remove_worker.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.scale_downs; }},
    {"workerpool_workers_declared_stuck_total", "counter",
     "Times a worker's handler overran its deadline plus the stuck grace.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.stuck_total; }},
    {"workerpool_queue_depth", "gauge", "Requests waiting in the queue (approximate).",
     [](const stats_snapshot& s) -> std::uint64_t { return s.queue_depth; }},
    {"workerpool_queue_capacity", "gauge", "The queue's exact bound.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.capacity; }},
    {"workerpool_retry_pending", "gauge", "Requests waiting out a retry backoff.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.retry_pending; }},
    {"workerpool_workers", "gauge", "Live workers, stuck ones and their replacements included.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.workers; }},
    {"workerpool_workers_busy", "gauge", "Workers running a handler.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.in_flight; }},
    {"workerpool_workers_idle", "gauge", "Workers asleep waiting for work.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.idle; }},
    {"workerpool_workers_stuck", "gauge",
     "Workers whose handler overran its deadline plus the stuck grace and still runs.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.stuck; }},
    {"workerpool_workers_peak", "gauge", "The most live workers seen at once.",
     [](const stats_snapshot& s) -> std::uint64_t { return s.peak_workers; }},
    {"workerpool_queue_wait_samples", "gauge",
     "Sampled requests behind workerpool_queue_wait_seconds (0: its quantiles are NaN).",
     [](const stats_snapshot& s) -> std::uint64_t { return s.queue_wait.samples; }},
    {"workerpool_run_time_samples", "gauge",
     "Sampled attempts behind workerpool_run_time_seconds (0: its quantiles are NaN).",
     [](const stats_snapshot& s) -> std::uint64_t { return s.run_time.samples; }},
}};

struct prometheus_summary {
    const char* name;
    const char* help;
    const latency_summary& (*value)(const stats_snapshot&);
};

inline constexpr std::array<prometheus_summary, 2> prometheus_summaries{{
    {"workerpool_queue_wait_seconds",
     "Time sampled requests waited in the queue before their attempt started, over the last 5 "
     "to 10 s; quantile 1 is the largest.",
     [](const stats_snapshot& s) -> const latency_summary& { return s.queue_wait; }},
    {"workerpool_run_time_seconds",
     "Run time of sampled attempts, over the last 5 to 10 s; quantile 1 is the largest.",
     [](const stats_snapshot& s) -> const latency_summary& { return s.run_time; }},
}};

inline void append_family_header(std::string& out, const char* name, const char* type,
                                 const char* help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

// Appends `{pool="<escaped name>"` (no closing brace: a quantile label may follow).
inline void append_pool_label(std::string& out, std::string_view pool_name) {
    out.append("{pool=\"");
    for (const char c : pool_name) {
        if (c == '\\') {
            out.append("\\\\");
        } else if (c == '"') {
            out.append("\\\"");
        } else if (c == '\n') {
            out.append("\\n");
        } else {
            out.push_back(c);
        }
    }
    out.push_back('"');
}

template <class Number>
void append_number(std::string& out, Number v) {
    std::array<char, 32> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    out.append(buf.data(), ec == std::errc{} ? end : buf.data());
}

}  // namespace detail

/// Returns the stats of several pools as one Prometheus text exposition (format 0.0.4): each
/// metric family once, with `# HELP` and `# TYPE`, and one sample per pool, labelled
/// `pool="<pool_name>"`. Counters (`workerpool_requests_completed_total`, ...) end in `_total`;
/// queue depth, capacity, retries pending and worker counts are gauges; the queue wait and run
/// time percentiles are summaries in seconds (`workerpool_queue_wait_seconds`,
/// `workerpool_run_time_seconds`) with quantiles 0.5, 0.9, 0.99 and 1 (the largest), `NaN` while
/// their window holds no sample. The summaries have no `_sum` or `_count`: the pool keeps
/// percentiles over a recent window, not totals. Give each pool a different name.
/// Throws: `std::bad_alloc` only. Thread safety: any thread; it only reads its arguments.
[[nodiscard]] inline std::string to_prometheus(std::span<const named_stats> pools) {
    std::string out;
    out.reserve(4096 + pools.size() * 2048);
    for (const detail::prometheus_scalar& f : detail::prometheus_scalars) {
        detail::append_family_header(out, f.name, f.type, f.help);
        for (const named_stats& p : pools) {
            out.append(f.name);
            detail::append_pool_label(out, p.pool_name);
            out.append("} ");
            detail::append_number(out, f.value(p.stats));
            out.push_back('\n');
        }
    }
    for (const detail::prometheus_summary& f : detail::prometheus_summaries) {
        detail::append_family_header(out, f.name, "summary", f.help);
        for (const named_stats& p : pools) {
            const latency_summary& l = f.value(p.stats);
            const std::array<std::pair<const char*, std::chrono::nanoseconds>, 4> quantiles{
                {{"0.5", l.p50}, {"0.9", l.p90}, {"0.99", l.p99}, {"1", l.max}}};
            for (const auto& [q, d] : quantiles) {
                out.append(f.name);
                detail::append_pool_label(out, p.pool_name);
                out.append(",quantile=\"").append(q).append("\"} ");
                if (l.samples == 0) {
                    out.append("NaN");
                } else {
                    detail::append_number(out, std::chrono::duration<double>(d).count());
                }
                out.push_back('\n');
            }
        }
    }
    return out;
}

/// Returns one pool's stats, `s`, as a Prometheus text exposition labelled `pool="<pool_name>"`;
/// see the overload for several pools, which an exposition with more than one pool must use
/// (a family may appear only once in it).
///
/// ```cpp
/// std::string text = workerpool::to_prometheus(pool.stats(), "crawler");
/// ```
/// Throws: `std::bad_alloc` only. Thread safety: any thread.
[[nodiscard]] inline std::string to_prometheus(const stats_snapshot& s,
                                               std::string_view pool_name) {
    const named_stats one{pool_name, s};
    return to_prometheus(std::span<const named_stats>(&one, 1));
}

}  // namespace workerpool
