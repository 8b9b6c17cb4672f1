#pragma once

/// @file
/// `detail::intake<...>`: the submit path — a request's settings (its own `job_options`, its
/// route's, the pool's), one try at the queue, the wake-up decision after an accepted push, the
/// blocking loop, and the count of refusals.

#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/cache_line.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/envelope.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/pool_thread.hpp>
#include <workerpool/detail/route_options.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/detail/supervisor.hpp>
#include <workerpool/options.hpp>
#include <workerpool/status.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <utility>

namespace workerpool::detail {

/// The submit path. Its parts outlive it; it owns the route options source and the refusal count.
///
/// After an accepted push it wakes the most recent sleeping worker if one sleeps (the producer's
/// side of [W1]: its claim precedes its load of the idle count), kicks the supervisor when no
/// worker exists (`min_workers == 0`), and kicks a resting supervisor ([K1]): that is all the hot
/// path adds to the push, three loads when nobody sleeps and the supervisor is not resting.
///
/// Thread safety: every member from any thread.
template <class Request, class Queue, class Workers, class Options = options<Request>>
class intake {
public:
    /// The worker type of the idle stack.
    using worker = typename Workers::slot;

    /// The components the submit path touches.
    struct parts {
        const Options& opts;
        Queue& queue;
        scheduler<typename Queue::value_type>& sched;  // requests with a key, a lane, a time
        idle_stack<worker>& idle;
        back_pressure& pressure;
        supervisor_signal& signal;
        const Workers& workers;        // for the count of live workers
        std::int64_t awake_period_ns;  // see supervisor_signal::worker_woke
    };

    /// A submit path over `p`, with the route options of the pool's handler.
    intake(parts p, route_options_source<Request> routes) noexcept
        : p_(p), routes_(routes),
          all_scheduled_(p.opts.priority_lanes > 1 || p.opts.rate_limit.per_second > 0.0),
          detour_(all_scheduled_ || routes_.active()) {}

    /// One try, without blocking; `full` counts as a refusal. `ticket`: a tracked request's
    /// completion, which travels with it.
    submit_status try_submit(Request& r, job_options jo,
                             completion_slot* ticket = nullptr) noexcept {
        if (detour_ || scheduled_by_own(jo)) [[unlikely]] {
            return counted(try_detoured(r, jo, ticket));
        }
        return counted(push(r, settings_of(jo), ticket));
    }

    /// Tries until accepted, closed, or `until` passes (see `back_pressure::submit_until`); a
    /// `self_call` never waits.
    submit_status submit_until(Request& r, job_options jo, bool self_call,
                               std::optional<std::chrono::steady_clock::time_point> until,
                               completion_slot* ticket = nullptr) noexcept {
        if (detour_ || scheduled_by_own(jo)) [[unlikely]] {
            return submit_detoured(r, jo, self_call, until, ticket);
        }
        // The fast path: a slot free at once.
        const submit_status s = push(r, settings_of(jo), ticket);
        return s == submit_status::full ? wait_then_push(r, jo, self_call, until, ticket) : s;
    }

    /// Moves as many of `rs` as fit now into the queue, with one claim per ring and one wake-up
    /// decision per chunk of `bulk_chunk`; returns how many (a prefix). A call that could not take
    /// them all counts as one refusal.
    std::size_t try_submit_bulk(std::span<Request> rs, const job_options& jo) noexcept {
        if (scheduled_for(jo)) [[unlikely]] {
            if (routes_.active()) {  // one by one: each request's route may add its own options
                std::size_t done = 0;
                while (done < rs.size() && try_submit(rs[done], jo) == submit_status::accepted) {
                    ++done;
                }
                return done;
            }
            std::size_t done = 0;
            bool out_of_memory = false;
            (void)counted(push_scheduled_bulk(rs, jo, done, out_of_memory));
            return done;
        }
        const auto r = push_bulk(rs, jo);
        if (r.accepted < rs.size() && !r.closed) {
            (void)counted(submit_status::full);
        }
        return r.accepted;
    }

    /// Moves all of `rs` into the queue, waiting for room as `submit_until` does; returns how many
    /// it moved (a prefix): all of them, or fewer if the queue closed, or if `self_call` found it
    /// full (a thread of the pool never waits for its own pool).
    std::size_t submit_bulk(std::span<Request> rs, const job_options& jo, bool self_call) noexcept {
        std::size_t done = 0;
        if (scheduled_for(jo)) [[unlikely]] {
            if (routes_.active()) {  // one by one, as try_submit_bulk
                while (done < rs.size() && submit_until(rs[done], jo, self_call, std::nullopt) ==
                                               submit_status::accepted) {
                    ++done;
                }
                return done;
            }
            return submit_scheduled_bulk(rs, jo, self_call);
        }
        const submit_status s = p_.pressure.submit_until(
            p_.queue,
            [&] {
                const auto r = push_bulk(rs.subspan(done), jo);
                done += r.accepted;
                if (done == rs.size()) {
                    return submit_status::accepted;
                }
                return r.closed || p_.queue.is_closed() ? submit_status::closed
                                                        : submit_status::full;
            },
            self_call, p_.opts.spin_before_sleep.count(), std::nullopt);
        (void)counted(s);
        return done;
    }

    /// Submit calls refused with `full` so far.
    [[nodiscard]] std::uint64_t rejected() const noexcept {
        return rejected_.load(std::memory_order_relaxed);  // statistics only
    }

private:
    // `try_submit` for a request with route options or one for the scheduler: out of line, so
    // that a plain pool's submit tests one flag (and, for options the caller did not set, fields
    // the compiler knows are zero).
    [[gnu::noinline]] submit_status try_detoured(Request& r, job_options& jo,
                                                 completion_slot* ticket) noexcept {
        routes_.apply(r, jo);  // a route adds a timeout, attempts or a deadline, never a key
        bool out_of_memory = false;
        return scheduled_for(jo) ? push_scheduled(r, jo, ticket, out_of_memory)
                                 : push(r, settings_of(jo), ticket);
    }

    // `submit_until`'s detour, for the same requests as `try_detoured`'s.
    [[gnu::noinline]] submit_status
    submit_detoured(Request& r, job_options& jo, bool self_call,
                    std::optional<std::chrono::steady_clock::time_point> until,
                    completion_slot* ticket) noexcept {
        routes_.apply(r, jo);
        if (scheduled_for(jo)) {
            return counted(submit_scheduled(r, jo, self_call, until, ticket));
        }
        const submit_status s = push(r, settings_of(jo), ticket);
        return s == submit_status::full ? wait_then_push(r, jo, self_call, until, ticket) : s;
    }

    // `submit_until` after its first try found the queue full. Out of line, so that the set-up
    // of the wait stays off the fast path.
    [[gnu::noinline]] submit_status
    wait_then_push(Request& r, const job_options& jo, bool self_call,
                   std::optional<std::chrono::steady_clock::time_point> until,
                   completion_slot* ticket) noexcept {
        return counted(p_.pressure.retry_until(
            p_.queue, [&, s = settings_of(jo)] { return push(r, s, ticket); }, self_call,
            p_.opts.spin_before_sleep.count(), until));
    }

    // A blocking submit through the scheduler. Out of line, as the scheduler's whole submit path.
    [[gnu::noinline]] submit_status
    submit_scheduled(Request& r, const job_options& jo, bool self_call,
                     std::optional<std::chrono::steady_clock::time_point> until,
                     completion_slot* ticket) noexcept {
        return while_lane_full(jo, self_call, until, [&](bool& out_of_memory) {
            return push_scheduled(r, jo, ticket, out_of_memory);
        });
    }

    // `submit_bulk` through the scheduler: the rest of `rs` each time its lane has room again.
    [[gnu::noinline]] std::size_t
    submit_scheduled_bulk(std::span<Request> rs, const job_options& jo, bool self_call) noexcept {
        std::size_t done = 0;
        (void)counted(while_lane_full(jo, self_call, std::nullopt, [&](bool& out_of_memory) {
            return push_scheduled_bulk(rs.subspan(done), jo, done, out_of_memory);
        }));
        return done;
    }

    // Calls `try_once(out_of_memory)` (a try at the scheduler) until it is not refused `full`;
    // while its lane is full, sleeps until a take makes room (unless `self_call`, or `until`
    // passed). A refusal for want of memory ends it with `full` at once: the lane has room, so
    // the wait would not wait, and a loop of tries would spin for as long as memory is short.
    template <class Try>
    submit_status while_lane_full(const job_options& jo, bool self_call,
                                  std::optional<std::chrono::steady_clock::time_point> until,
                                  Try&& try_once) noexcept {
        back_pressure::inside_call inside;
        for (;;) {
            bool out_of_memory = false;
            const submit_status s = try_once(out_of_memory);
            if (s != submit_status::full || out_of_memory || self_call ||
                (until && std::chrono::steady_clock::now() >= *until)) {
                return s;
            }
            inside.enter(p_.pressure);  // from here on the destructor waits for us
            (void)p_.sched.wait_for_room(jo.priority, until);  // then one more try
        }
    }

    // The bulk through the scheduler, in chunks of `bulk_chunk`: each chunk in one pass of the
    // scheduler's lock, then the wake-up decision once for the chunk. Adds how many went in (a
    // prefix) to `done`; returns why it stopped short (`accepted`: it did not; `full` with
    // `out_of_memory` set: for want of memory). For requests that share `jo` whole: no route adds
    // options of its own.
    [[gnu::noinline]] submit_status push_scheduled_bulk(std::span<Request> rs,
                                                        const job_options& jo, std::size_t& done,
                                                        bool& out_of_memory) noexcept {
        const std::int64_t not_before = not_before_ns(jo);
        const request_settings common = settings_of(jo);
        std::array<std::int64_t, bulk_chunk> sampled{};
        for (std::size_t taken = 0; taken < rs.size();) {
            const std::span<Request> part =
                rs.subspan(taken, std::min(bulk_chunk, rs.size() - taken));
            const std::span<std::int64_t> samples = std::span(sampled).first(part.size());
            sample_run(p_.opts.latency_sample_every, samples);
            const auto b =
                p_.sched.submit_bulk({jo.key, jo.priority, not_before}, scheduler_now(not_before),
                                     part, std::span<const std::int64_t>(samples), common);
            taken += b.accepted;
            done += b.accepted;
            if (b.accepted != 0) {
                scheduled_accepted(b.ready, b.due);
            }
            if (b.stopped != submit_status::accepted) {
                out_of_memory = b.out_of_memory;
                return b.stopped;
            }
        }
        return submit_status::accepted;
    }

    // Whether a request with `jo` goes through the scheduler rather than the ring.
    [[nodiscard]] bool scheduled_for(const job_options& jo) const noexcept {
        return all_scheduled_ || scheduled_by_own(jo);
    }

    // Whether `jo` itself asks for the scheduler: a key, a lane or a start time. One test of the
    // three fields ORed, not three branches: GCC 12 guesses each branch taken half the time, so
    // with three of them `submit_until` took its plain push for a cold path and called `push`
    // out of line (26 more instructions per submit, `scripts/count_instructions.py`).
    [[nodiscard]] static bool scheduled_by_own(const job_options& jo) noexcept {
        return (jo.key | jo.priority |
                static_cast<std::uint64_t>(jo.not_before.time_since_epoch().count())) != 0;
    }

    // One try at the scheduler; on `accepted`, the wake-up decision (a request that waits for a
    // time may need the supervisor earlier than it planned: [D2] through the scheduler's mutex).
    // A refusal for want of memory is `full` with `out_of_memory` set.
    [[gnu::noinline]] submit_status push_scheduled(Request& r, const job_options& jo,
                                                   completion_slot* ticket,
                                                   bool& out_of_memory) noexcept {
        const std::int64_t not_before = not_before_ns(jo);
        typename scheduler<typename Queue::value_type>::admitted a;
        try {
            a = p_.sched.submit({jo.key, jo.priority, not_before}, scheduler_now(not_before),
                                std::move(r), settings_of(jo),
                                sample_now(p_.opts.latency_sample_every), ticket);
        } catch (...) {
            out_of_memory = true;  // refused, `r` untouched
            return submit_status::full;
        }
        if (a.status == submit_status::accepted) {
            scheduled_accepted(a.ready ? 1U : 0U, a.due);
        }
        return a.status;
    }

    // `jo`'s `not_before` in nanoseconds, 0 when it has none.
    [[nodiscard]] static std::int64_t not_before_ns(const job_options& jo) noexcept {
        return jo.not_before == std::chrono::steady_clock::time_point{} ? 0 : to_ns(jo.not_before);
    }

    // The time for a scheduler submit: the clock when the request has a `not_before`, else
    // whatever the scheduler needs (see scheduler::clock_now).
    [[nodiscard]] std::int64_t scheduler_now(std::int64_t not_before) const noexcept {
        return not_before != 0 ? now_ns() : p_.sched.clock_now();
    }

    // The wake-up decision after the scheduler accepted requests: `ready` of them may start now
    // (a worker for each), and one waits until `due`, which may be before the supervisor planned
    // to wake ([D2] through the scheduler's mutex); a resting supervisor is kicked either way.
    void scheduled_accepted(std::size_t ready, std::int64_t due) noexcept {
        bool kick = due < p_.signal.next_wake();
        if (ready != 0) {
            accepted(ready);  // kicks a resting supervisor too
        } else {
            kick = p_.signal.take_resting() || kick;
        }
        if (kick) {
            p_.signal.kick();
        }
    }

    // `jo` completed by the pool's defaults. Computed where the caller's `jo` is known, so that a
    // plain submit's (all zero) folds into the defaults.
    [[nodiscard]] request_settings settings_of(const job_options& jo) const noexcept {
        return request_settings::of(jo, p_.opts.default_timeout, p_.opts.retry.max_attempts);
    }

    // One try at the queue; on `accepted`, the wake-up decision.
    submit_status push(Request& r, const request_settings& settings,
                       completion_slot* ticket) noexcept {
        const submit_status s = p_.queue.try_emplace(
            std::move(r), settings, sample_now(p_.opts.latency_sample_every), ticket);
        if (s == submit_status::accepted) {
            accepted(1);
        }
        return s;
    }

    // The wake-up decision after `n` requests went in, once per call.
    void accepted(std::size_t n) noexcept {
        // [W1] the producer's side: the claims (the queue's seq_cst CAS) precede this load.
        const bool sleeper = p_.idle.count() != 0;
        if (sleeper || p_.workers.live() == 0) [[unlikely]] {
            wake_or_start(n, sleeper);
        }
        if (p_.signal.take_resting()) [[unlikely]] {  // [K1] the pool was at rest: scaling resumes
            p_.signal.kick();
        }
    }

    // Out of line: a push that finds every worker busy, the common case under load, skips it.
    [[gnu::noinline]] void wake_or_start(std::size_t n, bool sleeper) noexcept {
        if (sleeper) {
            if (p_.idle.wake_up_to(n) != 0) {
                p_.signal.worker_woke(p_.awake_period_ns);  // [D3]
            }
        } else {
            p_.signal.kick();  // min_workers == 0 and nobody is running: start one now
        }
    }

    // The bulk push, in chunks of up to `bulk_chunk`: each request's settings (its route may
    // differ) are resolved before the claim, so that no user code (a route's options) runs
    // between a claim and its publication, where consumers would wait on it; then one claim per
    // ring, each request moved into its slot, and the wake-up decision once per chunk. `closed`
    // when it stopped because the queue is closed (the first `accepted` went in before).
    typename Queue::bulk_result push_bulk(std::span<Request> rs, const job_options& jo) noexcept {
        if (routes_.active()) [[unlikely]] {  // each request's route may add its own options
            std::array<request_settings, bulk_chunk> settings;
            return push_bulk_with(rs, [&](std::span<Request> part) {
                for (std::size_t i = 0; i < part.size(); ++i) {
                    job_options own = jo;
                    routes_.apply(part[i], own);
                    settings[i] = settings_of(own);
                }
                return
                    [&settings](std::size_t i) -> const request_settings& { return settings[i]; };
            });
        }
        const request_settings common = settings_of(jo);
        return push_bulk_with(rs, [&common](std::span<Request>) {
            return [&common](std::size_t) -> const request_settings& { return common; };
        });
    }

    // Moves `rs` in by chunks of `bulk_chunk`, one claim per chunk; `resolve(part)` settles the
    // chunk's settings ahead of the claim and returns where request `i`'s are.
    template <class Resolve>
    typename Queue::bulk_result push_bulk_with(std::span<Request> rs, Resolve&& resolve) noexcept {
        typename Queue::bulk_result total;
        std::array<std::int64_t, bulk_chunk> sampled{};
        while (total.accepted < rs.size()) {
            const std::span<Request> part =
                rs.subspan(total.accepted, std::min(bulk_chunk, rs.size() - total.accepted));
            const auto settings_of = resolve(part);
            sample_run(p_.opts.latency_sample_every, std::span(sampled).first(part.size()));
            const auto r =
                p_.queue.try_emplace_bulk(part.size(), [&](std::size_t i, void* where) noexcept {
                    ::new (where)
                        typename Queue::value_type(std::move(part[i]), settings_of(i), sampled[i]);
                });
            if (r.accepted != 0) {
                total.accepted += r.accepted;
                accepted(r.accepted);
            }
            if (r.closed || r.accepted < part.size()) {
                total.closed = r.closed;
                break;
            }
        }
        return total;
    }

    submit_status counted(submit_status s) noexcept {
        if (s == submit_status::full) {
            rejected_.fetch_add(1, std::memory_order_relaxed);  // statistics only
        }
        return s;
    }

    static constexpr std::size_t bulk_chunk = 64;  // requests resolved ahead of one claim

    parts p_;
    const route_options_source<Request> routes_;
    const bool all_scheduled_;  // lanes or a pool rate: every request goes through the scheduler
    const bool detour_;         // that, or route options: no submit takes the plain path
    // Written by refused submits only: a line of its own, away from the parts' references.
    alignas(cache_line) std::atomic<std::uint64_t> rejected_{0};
};

}  // namespace workerpool::detail
