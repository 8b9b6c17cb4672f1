#pragma once

// Includes Catch2 whichever major version is installed: v3 (split headers) or v2 (Debian 12's
// 2.13, a single header). Test files include this, never Catch2 directly.

#include <workerpool/status.hpp>

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_exception.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <catch2/matchers/catch_matchers_vector.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include <string>

namespace Catch {

// Failed assertions print `full`, not `1`.
template <>
struct StringMaker<workerpool::submit_status> {
    static std::string convert(workerpool::submit_status s) { return workerpool::to_string(s); }
};

template <>
struct StringMaker<workerpool::failure_reason> {
    static std::string convert(workerpool::failure_reason r) { return workerpool::to_string(r); }
};

}  // namespace Catch
