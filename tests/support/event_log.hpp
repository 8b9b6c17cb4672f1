// Records what a pool hands to on_event, for tests to inspect. The one event recorder of the
// tests (timeouts, stuck workers, scaling, shutdown).
#pragma once

#include <workerpool/stats.hpp>

#include <cstddef>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string_view>
#include <vector>

namespace workerpool::test {

// `sink()` is the on_event callback. Every member locks, so a test may poll it while the pool
// runs (with `eventually`); read it for exact figures once the pool is quiet or shut down.
class event_log {
public:
    // Runs on the pool's thread after each event is recorded, outside the lock: for a test that
    // acts when an event happens (say, lets held handlers go once shutdown begins). Set it before
    // the pool starts.
    std::function<void(const event&)> then;

    std::function<void(const event&)> sink() {
        return [this](const event& e) {
            {
                std::lock_guard lock(mutex_);
                events_.push_back(e);
            }
            if (then) {
                then(e);
            }
        };
    }

    // The events of kind `k`, in the order they came.
    std::vector<event> of(event_kind k) const {
        std::lock_guard lock(mutex_);
        std::vector<event> out;
        for (const event& e : events_) {
            if (e.kind == k) {
                out.push_back(e);
            }
        }
        return out;
    }

    // How many events of kind `k` came (with this reason, when one is given).
    std::size_t count(event_kind k, std::string_view reason = {}) const {
        std::size_t n = 0;
        for (const event& e : of(k)) {
            if (reason.empty() || reason == e.reason) {
                ++n;
            }
        }
        return n;
    }

    // The kinds among `wanted` that came, in order (other kinds left out).
    std::vector<event_kind> kinds(std::initializer_list<event_kind> wanted) const {
        std::lock_guard lock(mutex_);
        std::vector<event_kind> out;
        for (const event& e : events_) {
            for (const event_kind k : wanted) {
                if (e.kind == k) {
                    out.push_back(k);
                }
            }
        }
        return out;
    }

    // Workers added (k = scale_up) or retired (k = scale_down) according to the scale events.
    std::size_t delta(event_kind k) const {
        std::size_t n = 0;
        for (const event& e : of(k)) {
            n += k == event_kind::scale_up ? e.workers_after - e.workers_before
                                           : e.workers_before - e.workers_after;
        }
        return n;
    }

private:
    mutable std::mutex mutex_;
    std::vector<event> events_;  // guarded by mutex_
};

}  // namespace workerpool::test
