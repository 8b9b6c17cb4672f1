#!/usr/bin/env bash
# Builds and runs the consumer in tests/package/ against workerpool brought in four ways:
#   1. add_subdirectory of the checkout;
#   2. FetchContent with FETCHCONTENT_SOURCE_DIR_WORKERPOOL=<checkout> (offline; find_package off);
#   3. find_package(workerpool 0.1) from a fresh `cmake --install` prefix;
#   4. FetchContent whose FIND_PACKAGE_ARGS 0.1 finds that installed copy (the README's snippet).
# Everything happens in a temporary directory, removed at the end. Fails loudly on any error.
# Usage: tests/package/run.sh <workerpool-source-dir>     (ctest runs it as `package_consumers`)
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 <workerpool-source-dir>" >&2
    exit 2
fi
src=$(cd "$1" && pwd -P)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
work=$(mktemp -d "${TMPDIR:-/tmp}/workerpool-package.XXXXXX")
work=$(cd "$work" && pwd -P)
if [[ -n "${WORKERPOOL_KEEP_PACKAGE_DIR:-}" ]]; then
    echo "package: keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi

# Nothing in the environment may point find_package at some other copy of workerpool.
unset CMAKE_PREFIX_PATH workerpool_DIR workerpool_ROOT WORKERPOOL_ROOT

generator=()
if command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
fi
common=("${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
# Where hiredis is installed, every way in must also bring workerpool::redis.
if [[ -f /usr/include/hiredis/hiredis.h ]]; then
    common+=(-DEXPECT_REDIS=ON)
fi

# Runs a command quietly; on failure prints its output and what failed, and stops.
quiet() {
    local log="$work/last.log"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "package: FAILED: $*" >&2
        exit 1
    fi
}

# consumer <name> <cmake-source-dir> [cmake args...]: configure, build and run one consumer.
consumer() {
    local name=$1 dir=$2
    shift 2
    local build="$work/$name"
    echo "package: [$name] configure, build, run"
    quiet cmake -S "$here/$dir" -B "$build" "${common[@]}" "$@"
    quiet cmake --build "$build"
    local out
    if ! out=$("$build/consumer" 2>&1); then
        echo "$out" >&2
        echo "package: FAILED: [$name] the consumer exited non-zero" >&2
        exit 1
    fi
    echo "package: [$name] $out"
    if [[ -x "$build/redis_consumer" ]]; then
        if ! out=$("$build/redis_consumer" 2>&1); then
            echo "$out" >&2
            echo "package: FAILED: [$name] redis_consumer exited non-zero" >&2
            exit 1
        fi
        echo "package: [$name] $out"
    fi
}

consumer add_subdirectory add_subdirectory -DWORKERPOOL_SOURCE_DIR="$src"

consumer fetch_content fetch_content \
    -DFETCHCONTENT_SOURCE_DIR_WORKERPOOL="$src" \
    -DFETCHCONTENT_TRY_FIND_PACKAGE_MODE=NEVER \
    -DEXPECT_SOURCE_DIR="$src"

prefix="$work/prefix"
echo "package: [install] cmake --install into $prefix"
quiet cmake -S "$src" -B "$work/install-build" "${common[@]}" \
    -DWORKERPOOL_BUILD_TESTS=OFF -DWORKERPOOL_BUILD_EXAMPLES=OFF -DWORKERPOOL_BUILD_BENCH=OFF \
    -DCMAKE_INSTALL_PREFIX="$prefix"
quiet cmake --build "$work/install-build"
quiet cmake --install "$work/install-build"
for f in include/workerpool/version.hpp include/workerpool/bounded_queue.hpp \
         share/cmake/workerpool/workerpool-config.cmake \
         share/cmake/workerpool/workerpool-config-version.cmake \
         share/cmake/workerpool/workerpool-targets.cmake; do
    if [[ ! -f "$prefix/$f" ]]; then
        echo "package: FAILED: the install lacks $f" >&2
        exit 1
    fi
done
if [[ -d "$prefix/lib" || -d "$prefix/lib64" || -d "$prefix/bin" ]]; then
    echo "package: FAILED: a header-only install put files under lib/ or bin/:" >&2
    (cd "$prefix" && find . -type f) >&2
    exit 1
fi

consumer find_package find_package -DCMAKE_PREFIX_PATH="$prefix" -DEXPECT_PREFIX="$prefix"

consumer fetch_content_finds_install fetch_content \
    -DCMAKE_PREFIX_PATH="$prefix" -DFETCHCONTENT_FULLY_DISCONNECTED=ON -DEXPECT_PREFIX="$prefix"

echo "package: all consumers built and ran"
