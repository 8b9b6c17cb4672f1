#pragma once

/// @file
/// `detail::worker_loop<...>`: what each worker's thread runs — take the next request (from the
/// ring, or from the scheduler when it has work), run its attempt, repeat; spin, then sleep when
/// there is nothing; leave when shutdown or retirement says so.

#include <workerpool/detail/back_pressure.hpp>
#include <workerpool/detail/callbacks.hpp>
#include <workerpool/detail/clock.hpp>
#include <workerpool/detail/delay_queue.hpp>
#include <workerpool/detail/idle_stack.hpp>
#include <workerpool/detail/idle_waiters.hpp>
#include <workerpool/detail/lifecycle.hpp>
#include <workerpool/detail/pool_thread.hpp>
#include <workerpool/detail/scheduler.hpp>
#include <workerpool/detail/supervisor.hpp>
#include <workerpool/detail/worker_set.hpp>
#include <workerpool/stats.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <stop_token>
#include <thread>
#include <utility>

namespace workerpool::detail {

/// The worker loop, over the components in `parts` (which outlive it). It owns no state: each
/// worker's state is in its slot (`Payload`: the request it serves, where it came from).
///
/// Order of work: the ring, unless the scheduler has work (one relaxed load per round);
/// then the two take turns. While paused, nothing is taken. Once shutdown drains, a worker
/// leaves when the ring is empty and the scheduler holds nothing (or the pool is paused).
///
/// Thread safety: `run` on each worker's own thread.
template <class Envelope, class Payload, class Queue, class Runner, class Options>
class worker_loop {
public:
    /// The worker set's slot type.
    using worker = typename worker_set<Payload>::slot;

    /// The components the loop works on.
    struct parts {
        const void* pool;  // the dispatcher, for self-call detection (current_pool)
        const Options& opts;
        Queue& queue;
        scheduler<Envelope>& sched;
        const lifecycle& life;
        back_pressure& pressure;
        delay_queue<Envelope>& delay;
        idle_stack<worker>& idle;
        supervisor_signal& signal;
        Runner& runner;
        idle_waiters& waiters;
        worker_set<Payload>& workers;
        callbacks& calls;
        std::int64_t awake_period_ns;  // see supervisor_signal::worker_woke
        unsigned rng_seed;             // each worker's jitter generator starts from it
    };

    /// A loop over `p`.
    explicit worker_loop(parts p) noexcept : p_(p) {}

    /// Runs worker `w` on its own thread until `st` is stopped, it retires, or the pool's
    /// shutdown lets it go.
    void run(const std::stop_token& st, worker& w) noexcept {
        current_pool = p_.pool;
        name_this_thread(w.id);
        if (p_.opts.on_worker_start) {
            p_.calls.guard(p_.opts.on_worker_start, w.id);
        }
        std::minstd_rand rng(static_cast<std::uint_fast32_t>(p_.rng_seed + w.id * 7919));
        std::optional<Envelope>& current = w.payload.current;
        // A pop starts at the worker's home ring (see next_home: its own while there are at least
        // as many live workers as rings, so that two workers do not write one ring's index line
        // while both have work; else it goes round a share of the rings), and every
        // `pops_per_visit`-th pop at another ring, each in turn, so that a ring whose worker is
        // busy for long is still served.
        constexpr unsigned pops_per_visit = 32;
        const std::size_t rings = p_.queue.shard_count();
        std::size_t home = next_home(w, rings, rings);  // kept below `rings`: no division per pop
        std::size_t visit = home;                       // the ring the last visit started at
        std::size_t from = home;                        // where the next pop starts
        unsigned pops_here = 0;
        bool ring_next = false;  // with work in both, the ring and the scheduler take turns
        // relaxed: a flag, looked at every round; shutdown wakes the sleepers after setting it
        while (!st.stop_requested() &&
               !p_.life.at_least(phase::cancelling, std::memory_order_relaxed)) {
            // The scheduler's path stays out of line: a plain pool pays one relaxed load here.
            if (p_.sched.attention() != 0) [[unlikely]] {  // paused, or the scheduler has work
                const round r = scheduled_round(w, st, ring_next, rng);
                if (r == round::ran) {
                    continue;
                }
                if (r == round::paused) {
                    if (!idle_round(w, st, home)) {
                        break;
                    }
                    continue;
                }
            }
            if (p_.queue.consume(
                    from, [&current](Envelope&& e) noexcept { current.emplace(std::move(e)); })) {
                from = home;
                if (++pops_here == pops_per_visit && rings > 1) [[unlikely]] {
                    pops_here = 0;
                    home = next_home(w, rings, home);
                    visit = visit + 1 == rings ? 0 : visit + 1;
                    if (visit == home) {
                        visit = visit + 1 == rings ? 0 : visit + 1;
                    }
                    from = visit;
                }
                // [W3] the consumer's side: the pop's seq_cst CAS precedes this load.
                if (p_.pressure.waiting()) {
                    room_freed();
                }
                p_.runner.run(w, *current, rng);
                current.reset();
                p_.waiters.notify();
                continue;
            }
            if (!idle_round(w, st, home)) {
                break;
            }
            home = next_home(w, rings, rings);  // its seat may have moved while it slept
            from = home;
        }
        if (p_.opts.on_worker_stop) {
            p_.calls.guard(p_.opts.on_worker_stop, w.id);
        }
        current_pool = nullptr;
        p_.workers.note_exit(w);
        p_.signal.kick();  // so the exited thread is joined promptly
    }

private:
    /// What a round through the scheduler did.
    enum class round : std::uint8_t {
        ran,     ///< took one of its requests and ran it (and maybe more: see finish_scheduled)
        paused,  ///< the pool is paused: nothing may start
        ring,    ///< nothing taken: the ring's turn
    };

    // A round while the scheduler wants attention: takes and runs its next request (unless the
    // ring's turn comes first), and the ones after it for as long as finish_scheduled takes them
    // (until one of the next round's checks sends the worker back to the loop); or reports the
    // pause.
    [[gnu::noinline]] round scheduled_round(worker& w, const std::stop_token& st, bool& ring_next,
                                            std::minstd_rand& rng) noexcept {
        if (p_.sched.paused()) {
            return round::paused;
        }
        if (!take_scheduled(w, ring_next)) {
            return round::ring;
        }
        for (;;) {
            p_.runner.run(w, *w.payload.current, rng);
            w.payload.current.reset();
            const after_finish next = finish_scheduled(w, st, ring_next);
            p_.waiters.notify();
            if (next == after_finish::took) {
                continue;
            }
            // A take that looked and found nothing is the next round's take_scheduled coming
            // back empty: the ring's turn, as it would have been.
            return next == after_finish::took_nothing ? round::ring : round::ran;
        }
    }

    // Nothing was taken: leave (false) once shutdown drains and nothing is left to start, else
    // spin, then sleep until there may be work.
    bool idle_round(worker& w, const std::stop_token& st, std::size_t home) noexcept {
        // [L2] acquire: sees the queue's close, which shutdown made before [L1].
        if (p_.life.at_least(phase::draining, std::memory_order_acquire)) {
            if (p_.sched.paused() || (!p_.queue.has_claimed_elements() && p_.sched.empty())) {
                return false;  // closed and empty (or paused): nothing more will start
            }
            if (p_.queue.has_claimed_elements()) {
                std::this_thread::yield();  // a producer is still writing the last element
            } else {
                sleep_until_work(w, st, true);  // the scheduler's requests wait for a time
            }
        } else if (p_.sched.paused() || !spin_for_work(st, home)) {
            sleep_until_work(w, st, false);
        }
        return true;
    }

    // The ring `w` starts its pops at for its next `pops_per_visit` pops, after `home` (`rings`
    // at first). Its seat (worker_set::seat) decides: with at least as many live workers as
    // rings, ring `seat % rings`, each ring with a worker of its own; with fewer, the rings
    // `seat`, `seat + live`, ... in turn, each ring with exactly one worker going round it.
    [[nodiscard]] std::size_t next_home(const worker& w, std::size_t rings,
                                        std::size_t home) const noexcept {
        const std::size_t live = std::max<std::size_t>(p_.workers.live(), 1);
        const std::size_t seat = worker_set<Payload>::seat(w) % live;  // racy: either is fine
        if (live >= rings) {
            return seat % rings;
        }
        if (home >= rings || home % live != seat) {
            return seat;  // the first ring of its share (the share changed, or it starts)
        }
        return home + live < rings ? home + live : seat;
    }

    // A pop freed a ring slot while someone waits for room: due retries first, then producers.
    [[gnu::noinline]] void room_freed() noexcept {
        p_.pressure.room_freed(p_.queue, p_.delay, [this](const auto& released) {
            if (p_.idle.wake_up_to(released.pushed) != 0) {  // [W1] as after a push
                note_worker_awake();
            }
            // The supervisor planned no wake-up for retries that waited for room.
            if (released.next_due < p_.signal.next_wake()) {
                p_.signal.kick();
            }
        });
    }

    // Takes the scheduler's next request into `w`, unless the ring's turn comes first (`ring_next`
    // alternates while both have work). Reports the limits it ran into.
    [[gnu::noinline]] bool take_scheduled(worker& w, bool& ring_next) noexcept {
        ring_next = !ring_next;
        if (ring_next && p_.queue.has_claimed_elements()) {
            return false;
        }
        const auto t = p_.sched.take(p_.sched.clock_now(), w.payload.current, w.payload.turn);
        note_take(t);
        return t.got;
    }

    // What finish_scheduled did after the finish.
    enum class after_finish : std::uint8_t {
        no_take,       ///< it did not look (a check failed, or nothing was ready after the finish)
        took_nothing,  ///< it looked and took nothing (tokens, or taken meanwhile)
        took,          ///< the scheduler's next request is in `w`
    };

    // The scheduler's request has ended (or waits there to retry): its key's next moves up. When
    // the worker may start another (the next round's checks pass) and the scheduler then has a
    // request to take (its ready bit would be set), it takes it into `w` in the same pass of the
    // scheduler's lock. `ring_next` moves only when it took or tried to, as the next round's
    // take_scheduled would have (reached only with the ready bit set).
    [[gnu::noinline]] after_finish finish_scheduled(worker& w, const std::stop_token& st,
                                                    bool& ring_next) noexcept {
        const scheduled_turn done = std::exchange(w.payload.turn, scheduled_turn{});
        const bool finishes = !done.retried && done.key != 0;  // its key's next moves up
        after_finish result = after_finish::no_take;
        // The next round's checks, in its order: stop, shutdown, work or a pause here (relaxed:
        // hints, as in run's loop), the pause (seq_cst, as scheduled_round's), the ring's turn
        // (as take_scheduled's).
        if (!st.stop_requested() &&
            !p_.life.at_least(phase::cancelling, std::memory_order_relaxed) &&
            (finishes || p_.sched.attention() != 0) && !p_.sched.paused() &&
            (ring_next || !p_.queue.has_claimed_elements())) {
            const auto ft = p_.sched.finish_then_take(done, p_.sched.clock_now(), w.payload.current,
                                                      w.payload.turn);
            note_finish(ft.finished, st);
            if (ft.looked) {  // something could be taken after the finish: the scheduler's turn
                ring_next = !ring_next;
                note_take(ft.next);
                result = ft.next.got ? after_finish::took : after_finish::took_nothing;
            }
        } else if (finishes) {
            note_finish(p_.sched.finish(done, p_.sched.clock_now()), st);
        }
        if (p_.life.at_least(phase::draining) && p_.sched.empty()) {
            p_.idle.wake_all();  // the draining workers that wait for the scheduler may leave
        }
        return result;
    }

    // What a take put aside: the throttle events, and a wake-up for the supervisor when a token
    // will be there before it planned to look.
    void note_take(const typename scheduler<Envelope>::taken& t) noexcept {
        if (t.pool_throttled) {
            throttled("rate_limit");
        }
        for (unsigned i = 0; i < t.key_throttled; ++i) {
            throttled("key_rate_limit");
        }
        if (t.due < p_.signal.next_wake()) {
            p_.signal.kick();  // it must wake when the token is there
        }
    }

    // What a finish made ready or due.
    void note_finish(const typename scheduler<Envelope>::released& r,
                     const std::stop_token& st) noexcept {
        if (r.next_due < p_.signal.next_wake()) {
            p_.signal.kick();
        }
        if (r.ready != 0 && st.stop_requested() && p_.idle.wake_up_to(1) != 0) {
            note_worker_awake();  // leaving: another worker takes the key's next request
        }
    }

    // Polls briefly before sleeping; returns true if there may be work (or a reason to look).
    [[nodiscard]] bool spin_for_work(const std::stop_token& st, std::size_t home) const noexcept {
        return p_.queue.spin_for_elements(home, p_.opts.spin_before_sleep.count(), [&] {
            // relaxed: a hint, read again with order before sleeping; so is the scheduler's
            // flags word (work there, or a pause, ends the spin)
            return st.stop_requested() ||
                   p_.life.at_least(phase::draining, std::memory_order_relaxed) ||
                   p_.sched.attention() != 0;
        });
    }

    // Returns when there may be work, or the worker must look at its stop conditions; `draining`:
    // shutdown has begun and the scheduler still holds requests that wait for a time.
    void sleep_until_work(worker& w, const std::stop_token& st, bool draining) noexcept {
        if (p_.idle.sleep(w, now_ns(), [&] {
                // [W1] seq_cst, the scheduler's flags too
                return (p_.queue.has_claimed_elements() && !p_.sched.paused()) ||
                       p_.sched.has_ready() || st.stop_requested() ||
                       p_.life.at_least(draining ? phase::cancelling : phase::draining) ||
                       (draining && (p_.sched.empty() || p_.sched.paused()));
            })) {
            note_worker_awake();
        }
    }

    // [D3] A worker became awake: the supervisor must come round to stamp its timed attempts.
    void note_worker_awake() noexcept { p_.signal.worker_woke(p_.awake_period_ns); }

    void throttled(const char* whose) noexcept {
        p_.calls.emit(callbacks::make(event_kind::throttled, whose, p_.workers.live(),
                                      p_.workers.live(), p_.queue.approx_size()));
    }

    parts p_;
};

}  // namespace workerpool::detail
