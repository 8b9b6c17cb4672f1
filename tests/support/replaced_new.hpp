// The replaceable global allocation functions (every form of operator new and delete: plain,
// array, nothrow, aligned, sized), forwarding to three hooks. For test executables that count or
// fail allocations: include this header in exactly one .cpp of the executable (the replacements
// are not inline, by the language's rule), and define the hooks there:
//
//   void* workerpool::test::allocate(std::size_t n) noexcept;          // null: it fails
//   void* workerpool::test::allocate_aligned(std::size_t n, std::align_val_t al) noexcept;
//   void workerpool::test::deallocate(void* p) noexcept;
//
// `aligned_malloc` is what an aligned hook that does not fail calls.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace workerpool::test {

// Not inlined: GCC (-Wmismatched-new-delete, at -O1 and above) takes a hook's std::free, once
// inlined through operator delete into a delete expression, for a free of new's memory.
[[gnu::noinline]] void* allocate(std::size_t n) noexcept;
[[gnu::noinline]] void* allocate_aligned(std::size_t n, std::align_val_t al) noexcept;
[[gnu::noinline]] void deallocate(void* p) noexcept;

// malloc for `n` bytes aligned to `al` (at least a pointer's alignment); null when out of memory.
inline void* aligned_malloc(std::size_t n, std::align_val_t al) noexcept {
    const auto a = std::max(static_cast<std::size_t>(al), sizeof(void*));
    void* p = nullptr;
    return posix_memalign(&p, a, n == 0 ? 1 : n) == 0 ? p : nullptr;
}

namespace replaced_new_detail {

inline void* or_throw(void* p) {
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

}  // namespace replaced_new_detail

}  // namespace workerpool::test

void* operator new(std::size_t n) {
    return workerpool::test::replaced_new_detail::or_throw(workerpool::test::allocate(n));
}
void* operator new[](std::size_t n) {
    return workerpool::test::replaced_new_detail::or_throw(workerpool::test::allocate(n));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return workerpool::test::allocate(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return workerpool::test::allocate(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
    return workerpool::test::replaced_new_detail::or_throw(
        workerpool::test::allocate_aligned(n, a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
    return workerpool::test::replaced_new_detail::or_throw(
        workerpool::test::allocate_aligned(n, a));
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return workerpool::test::allocate_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return workerpool::test::allocate_aligned(n, a);
}

void operator delete(void* p) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete[](void* p) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete(void* p, std::size_t) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    workerpool::test::deallocate(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    workerpool::test::deallocate(p);
}
