#pragma once

// Back-pressure for peers whose queue is unbounded (Asio, oneTBB, moodycamel): a counting
// semaphore of free slots, taken by submit and given back when a worker dequeues the task. This
// is how a user would bound them; it costs two atomic operations per request (plus a futex call
// when a side has to sleep). With capacity 0 the gate is open and costs nothing.

#include <cstddef>
#include <memory>
#include <semaphore>

namespace workerpool_bench {

class bounded_gate {
public:
    explicit bounded_gate(std::size_t capacity) {
        if (capacity != 0) {
            free_slots_ =
                std::make_unique<std::counting_semaphore<>>(static_cast<std::ptrdiff_t>(capacity));
        }
    }

    /// Takes a slot, blocking while none is free.
    void acquire() {
        if (free_slots_) {
            free_slots_->acquire();
        }
    }

    /// Gives a slot back (called when a worker has dequeued a task).
    void release() {
        if (free_slots_) {
            free_slots_->release();
        }
    }

private:
    std::unique_ptr<std::counting_semaphore<>> free_slots_;
};

}  // namespace workerpool_bench
