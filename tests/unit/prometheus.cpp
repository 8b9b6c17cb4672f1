// to_prometheus (issue 17): a stats_snapshot in the Prometheus text exposition format. These
// tests check the format's rules one by one; CI also feeds a real pool's output to
// `promtool check metrics` (.ci/run, step metrics).

#include <workerpool/dispatcher.hpp>
#include <workerpool/prometheus.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <cstddef>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

workerpool::stats_snapshot sample_stats() {
    workerpool::stats_snapshot s;
    s.submitted = 42;
    s.rejected = 3;
    s.completed = 37;
    s.failed = 4;
    s.retried = 9;
    s.timed_out = 2;
    s.late = 1;
    s.cancelled = 5;
    s.expired = 6;
    s.callback_errors = 7;
    s.queue_depth = 11;
    s.capacity = 1024;
    s.retry_pending = 12;
    s.workers = 8;
    s.in_flight = 6;
    s.idle = 2;
    s.stuck = 1;
    s.peak_workers = 16;
    s.scale_ups = 20;
    s.scale_downs = 12;
    s.stuck_total = 13;
    s.queue_wait = {1500us, 2ms, 250ms, 1s, 100};
    s.run_time = {};  // an empty window
    return s;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

bool has_line(const std::string& text, const std::string& line) {
    for (const auto& l : lines_of(text)) {
        if (l == line) {
            return true;
        }
    }
    return false;
}

// The metric name of a sample line: up to the first '{' or ' '.
std::string name_of(const std::string& line) {
    return line.substr(0, line.find_first_of("{ "));
}

}  // namespace

TEST_CASE("to_prometheus writes counters, gauges and summaries with the pool label",
          "[prometheus][unit]") {
    const std::string text = workerpool::to_prometheus(sample_stats(), "crawler");

    CHECK(has_line(text, "# TYPE workerpool_requests_submitted_total counter"));
    CHECK(has_line(text, "workerpool_requests_submitted_total{pool=\"crawler\"} 42"));
    CHECK(has_line(text, "workerpool_submits_rejected_total{pool=\"crawler\"} 3"));
    CHECK(has_line(text, "workerpool_requests_completed_total{pool=\"crawler\"} 37"));
    CHECK(has_line(text, "workerpool_requests_failed_total{pool=\"crawler\"} 4"));
    CHECK(has_line(text, "workerpool_retries_total{pool=\"crawler\"} 9"));
    CHECK(has_line(text, "workerpool_attempts_timed_out_total{pool=\"crawler\"} 2"));
    CHECK(has_line(text, "workerpool_attempts_late_total{pool=\"crawler\"} 1"));
    CHECK(has_line(text, "workerpool_attempts_cancelled_total{pool=\"crawler\"} 5"));
    CHECK(has_line(text, "workerpool_requests_expired_total{pool=\"crawler\"} 6"));
    CHECK(has_line(text, "workerpool_callback_errors_total{pool=\"crawler\"} 7"));
    CHECK(has_line(text, "workerpool_scale_ups_total{pool=\"crawler\"} 20"));
    CHECK(has_line(text, "workerpool_scale_downs_total{pool=\"crawler\"} 12"));
    CHECK(has_line(text, "workerpool_workers_declared_stuck_total{pool=\"crawler\"} 13"));

    CHECK(has_line(text, "# TYPE workerpool_queue_depth gauge"));
    CHECK(has_line(text, "workerpool_queue_depth{pool=\"crawler\"} 11"));
    CHECK(has_line(text, "workerpool_queue_capacity{pool=\"crawler\"} 1024"));
    CHECK(has_line(text, "workerpool_retry_pending{pool=\"crawler\"} 12"));
    CHECK(has_line(text, "workerpool_workers{pool=\"crawler\"} 8"));
    CHECK(has_line(text, "workerpool_workers_busy{pool=\"crawler\"} 6"));
    CHECK(has_line(text, "workerpool_workers_idle{pool=\"crawler\"} 2"));
    CHECK(has_line(text, "workerpool_workers_stuck{pool=\"crawler\"} 1"));
    CHECK(has_line(text, "workerpool_workers_peak{pool=\"crawler\"} 16"));
    CHECK(has_line(text, "workerpool_queue_wait_samples{pool=\"crawler\"} 100"));
    CHECK(has_line(text, "workerpool_run_time_samples{pool=\"crawler\"} 0"));

    CHECK(has_line(text, "# TYPE workerpool_queue_wait_seconds summary"));
    CHECK(
        has_line(text, "workerpool_queue_wait_seconds{pool=\"crawler\",quantile=\"0.5\"} 0.0015"));
    CHECK(has_line(text, "workerpool_queue_wait_seconds{pool=\"crawler\",quantile=\"0.9\"} 0.002"));
    CHECK(has_line(text, "workerpool_queue_wait_seconds{pool=\"crawler\",quantile=\"0.99\"} 0.25"));
    CHECK(has_line(text, "workerpool_queue_wait_seconds{pool=\"crawler\",quantile=\"1\"} 1"));
    // An empty window has no percentiles: NaN, as Prometheus clients write it.
    CHECK(has_line(text, "workerpool_run_time_seconds{pool=\"crawler\",quantile=\"0.5\"} NaN"));
    CHECK(has_line(text, "workerpool_run_time_seconds{pool=\"crawler\",quantile=\"1\"} NaN"));
}

TEST_CASE("to_prometheus gives every family one HELP and one TYPE before its samples",
          "[prometheus][unit]") {
    const std::string text = workerpool::to_prometheus(sample_stats(), "p");
    std::map<std::string, int> help, type;
    std::map<std::string, std::string> type_of;
    std::set<std::string> sampled;
    std::string current;  // the family the last TYPE line opened
    for (const std::string& line : lines_of(text)) {
        INFO(line);
        REQUIRE_FALSE(line.empty());
        if (line.rfind("# HELP ", 0) == 0) {
            const std::string rest = line.substr(7);
            ++help[rest.substr(0, rest.find(' '))];
            CHECK(rest.find(' ') != std::string::npos);  // a help text follows the name
        } else if (line.rfind("# TYPE ", 0) == 0) {
            const std::string rest = line.substr(7);
            current = rest.substr(0, rest.find(' '));
            ++type[current];
            type_of[current] = rest.substr(rest.find(' ') + 1);
        } else {
            CHECK(name_of(line) == current);  // samples follow their own family's TYPE
            sampled.insert(name_of(line));
        }
    }
    CHECK(type.size() == 25u);  // 13 counters, 10 gauges, 2 summaries
    for (const auto& [name, n] : type) {
        INFO(name);
        CHECK(n == 1);
        CHECK(help[name] == 1);
        CHECK(sampled.count(name) == 1u);
        const bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
        CHECK(total == (type_of[name] == "counter"));  // _total on counters, and only on them
        CHECK(name.rfind("workerpool_", 0) == 0);
        CHECK(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos);
    }
    CHECK(type_of["workerpool_queue_wait_seconds"] == "summary");
    CHECK(type_of["workerpool_run_time_seconds"] == "summary");
}

TEST_CASE("to_prometheus escapes the pool name in its label", "[prometheus][unit]") {
    const std::string text = workerpool::to_prometheus(sample_stats(), "a\"b\\c\nd");
    CHECK(has_line(text, "workerpool_workers{pool=\"a\\\"b\\\\c\\nd\"} 8"));
}

TEST_CASE("to_prometheus of several pools writes each family once, one sample per pool",
          "[prometheus][unit]") {
    workerpool::stats_snapshot other = sample_stats();
    other.workers = 3;
    const std::vector<workerpool::named_stats> pools{{"fetch", sample_stats()}, {"store", other}};
    const std::string text = workerpool::to_prometheus(pools);
    std::size_t type_lines = 0;
    for (const auto& l : lines_of(text)) {
        type_lines += l.rfind("# TYPE workerpool_workers ", 0) == 0 ? 1U : 0U;
    }
    CHECK(type_lines == 1u);
    CHECK(has_line(text, "workerpool_workers{pool=\"fetch\"} 8"));
    CHECK(has_line(text, "workerpool_workers{pool=\"store\"} 3"));
    CHECK(has_line(text, "workerpool_queue_wait_seconds{pool=\"store\",quantile=\"0.99\"} 0.25"));
    // The single-pool overload is the one-element case of this one.
    CHECK(
        workerpool::to_prometheus(sample_stats(), "fetch") ==
        workerpool::to_prometheus(std::vector<workerpool::named_stats>{{"fetch", sample_stats()}}));
}

TEST_CASE("to_prometheus reports what a real pool did", "[prometheus][dispatcher][unit]") {
    struct job {
        int id = 0;
    };
    workerpool::options<job> opts;
    opts.latency_sample_every = 1;  // time every request...
    workerpool::dispatcher<job> pool{[](job&) {}, opts};
    // ...once this thread's countdown, shared by every pool it submits to, has run out: an earlier
    // test's pool (sampling 1 in 32) may have left up to 31 submits to go.
    for (int i = 0; i < 64; ++i) {
        REQUIRE(pool.submit(job{i}) == workerpool::submit_status::accepted);
    }
    pool.wait_idle();
    const std::string text = workerpool::to_prometheus(pool.stats(), "demo");
    CHECK(has_line(text, "workerpool_requests_submitted_total{pool=\"demo\"} 64"));
    CHECK(has_line(text, "workerpool_requests_completed_total{pool=\"demo\"} 64"));
    CHECK(has_line(text, "workerpool_queue_capacity{pool=\"demo\"} 1024"));
    CHECK_FALSE(has_line(text, "workerpool_run_time_samples{pool=\"demo\"} 0"));
    CHECK_FALSE(has_line(text, "workerpool_run_time_seconds{pool=\"demo\",quantile=\"1\"} NaN"));
}
