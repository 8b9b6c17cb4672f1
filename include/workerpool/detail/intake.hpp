#pragma once

/// @file
/// `detail::intake<...>`: the submit path — a request's settings (its own `job_options`, its
/// route's, the pool's), one try at the queue, the wake-up decision after an accepted push, the
/// blocking loop, and the count of refusals.

#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/pool_thread.hpp>
#include <workerpool/detail/route_options.hpp>
#include <workerpool/detail/supervisor.hpp>
#include <workerpool/options.hpp>
#include <workerpool/status.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

namespace workerpool::detail {

/// The submit path. Its parts outlive it; it owns the route options source and the refusal count.
///
/// After an accepted push it wakes the most recent sleeping worker if one sleeps (the producer's
/// side of [W1]: its claim precedes its load of the idle count), kicks the supervisor when no
/// worker exists (`min_workers == 0`), and kicks a parked supervisor ([K1]): that is all the hot
/// path adds to the push, three loads when nobody sleeps and the supervisor is not parked.
///
/// Thread safety: every member from any thread.
template <class Request, class Queue, class Workers>
class intake {
public:
    /// The worker type of the idle stack.
    using worker = typename Workers::slot;

    /// The components the submit path touches.
    struct parts {
        const options<Request>& opts;
        Queue& queue;
        idle_stack<worker>& idle;
        back_pressure& pressure;
        supervisor_signal& signal;
        const Workers& workers;        // for the count of live workers
        std::int64_t awake_period_ns;  // see supervisor_signal::worker_woke
    };

    /// A submit path over `p`, with the route options of the pool's handler.
    intake(parts p, route_options_source<Request> routes) noexcept : p_(p), routes_(routes) {}

    /// One try, without blocking; `full` counts as a refusal.
    submit_status try_submit(Request& r, job_options jo) noexcept {
        routes_.apply(r, jo);
        return counted(push(r, jo));
    }

    /// Tries until accepted, closed, or `until` passes (see `back_pressure::submit_until`); a
    /// `self_call` never waits.
    submit_status submit_until(Request& r, job_options jo, bool self_call,
                               std::optional<std::chrono::steady_clock::time_point> until) noexcept {
        routes_.apply(r, jo);
        return counted(p_.pressure.submit_until(
            p_.queue, [&] { return push(r, jo); }, self_call,
            p_.opts.spin_before_sleep.count(), until));
    }

    /// Submit calls refused with `full` so far.
    [[nodiscard]] std::uint64_t rejected() const noexcept {
        return rejected_.load(std::memory_order_relaxed);  // statistics only
    }

private:
    // One try at the queue; on `accepted`, the wake-up decision.
    submit_status push(Request& r, const job_options& jo) noexcept {
        const submit_status s = p_.queue.try_emplace(
            std::move(r),
            request_settings::of(jo, p_.opts.default_timeout, p_.opts.retry.max_attempts),
            sample_now(p_.opts.latency_sample_every));
        if (s == submit_status::accepted) {
            // [W1] the producer's side: the claim (the queue's seq_cst CAS) precedes this load.
            if (p_.idle.count() != 0) {
                wake_sleeper(p_.idle, p_.signal, p_.awake_period_ns);
            } else if (p_.workers.live() == 0) {
                p_.signal.kick();  // min_workers == 0 and nobody is running: start one now
            }
            if (p_.signal.take_parked()) {  // [K1] the pool was at rest: scaling resumes
                p_.signal.kick();
            }
        }
        return s;
    }

    submit_status counted(submit_status s) noexcept {
        if (s == submit_status::full) {
            rejected_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        }
        return s;
    }

    parts p_;
    const route_options_source<Request> routes_;
    // Written by refused submits only: a line of its own, away from the parts' references.
    alignas(cache_line) std::atomic<std::uint64_t> rejected_{0};
};

}  // namespace workerpool::detail
