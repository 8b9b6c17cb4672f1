// main() for Catch2 installs that have no Catch2::Catch2WithMain target (older v2 packages).
// tests/CMakeLists.txt compiles this only when that target is missing.

#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>

int main(int argc, char* argv[]) {
    return Catch::Session().run(argc, argv);
}
#else
#define CATCH_CONFIG_MAIN  // NOLINT(readability-identifier-naming): Catch2's own macro
#include <catch2/catch.hpp>
#endif
