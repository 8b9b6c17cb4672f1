#pragma once

/// @file
/// The library's version, as macros for the preprocessor and as constants in `workerpool`.

// The version must be macros, for `#if` in users' code; `version_major` and the others below are
// the same as constants. NOLINTBEGIN(cppcoreguidelines-macro-usage)

/// The library's major version. Kept equal to `project(workerpool VERSION ...)` in CMakeLists.txt,
/// whose configure step fails if the two disagree.
#define WORKERPOOL_VERSION_MAJOR 0
/// The library's minor version. While the major version is 0, a new minor version may break the
/// API (the CMake package is `SameMinorVersion`-compatible).
#define WORKERPOOL_VERSION_MINOR 1
/// The library's patch version.
#define WORKERPOOL_VERSION_PATCH 0

/// The version as one comparable number, `MAJOR * 10000 + MINOR * 100 + PATCH` (0.1.0 is 100),
/// for `#if WORKERPOOL_VERSION >= 200`.
#define WORKERPOOL_VERSION                                                                         \
    (WORKERPOOL_VERSION_MAJOR * 10000 + WORKERPOOL_VERSION_MINOR * 100 + WORKERPOOL_VERSION_PATCH)

#define WORKERPOOL_DETAIL_STRINGIFY_IMPL(x) #x
#define WORKERPOOL_DETAIL_STRINGIFY(x) WORKERPOOL_DETAIL_STRINGIFY_IMPL(x)

/// The version as a string literal, "MAJOR.MINOR.PATCH".
// clang-format off
#define WORKERPOOL_VERSION_STRING                                                                  \
    WORKERPOOL_DETAIL_STRINGIFY(WORKERPOOL_VERSION_MAJOR) "."                                      \
    WORKERPOOL_DETAIL_STRINGIFY(WORKERPOOL_VERSION_MINOR) "."                                      \
    WORKERPOOL_DETAIL_STRINGIFY(WORKERPOOL_VERSION_PATCH)
// clang-format on
// NOLINTEND(cppcoreguidelines-macro-usage)

namespace workerpool {

/// The major version of the headers in use (`WORKERPOOL_VERSION_MAJOR`).
inline constexpr int version_major = WORKERPOOL_VERSION_MAJOR;
/// The minor version of the headers in use (`WORKERPOOL_VERSION_MINOR`).
inline constexpr int version_minor = WORKERPOOL_VERSION_MINOR;
/// The patch version of the headers in use (`WORKERPOOL_VERSION_PATCH`).
inline constexpr int version_patch = WORKERPOOL_VERSION_PATCH;
/// The version of the headers in use as "MAJOR.MINOR.PATCH" (`WORKERPOOL_VERSION_STRING`).
inline constexpr const char* version_string = WORKERPOOL_VERSION_STRING;

}  // namespace workerpool
