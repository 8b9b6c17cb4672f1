#!/usr/bin/env bash
# Builds and runs a small consumer (main.cpp, as `my_app`) against workerpool brought in by the
# README's own CMake blocks, taken from README.md as written (each is annotated
# `<!-- snippet: package-test NAME -->` there; scripts/check-readme.sh checks that this script
# builds every one of them, with `readme_block NAME`):
#   1. add_subdirectory      the add_subdirectory block, with third_party/workerpool a link to the
#                            checkout;
#   2. fetch_content         the FetchContent block with only its URL changed, to a bare copy of
#                            the checkout: the README's GIT_TAG must exist in this repository
#                            (the copy points it at HEAD, so the commit under test is built), and
#                            git fetches it; FETCHCONTENT_TRY_FIND_PACKAGE_MODE=NEVER, so that an
#                            installed copy on the machine cannot stand in for the fetch;
#   3. fetch_content_source  the same block with FETCHCONTENT_SOURCE_DIR_WORKERPOOL=<checkout>
#                            (offline, the working tree as it is);
#   4. install               `cmake --install BUILD --prefix PREFIX`, as the README says;
#   5. find_package          the find_package block with CMAKE_PREFIX_PATH=PREFIX;
#   6. fetch_content_finds_install
#                            the FetchContent block again, its URL changed to one that does not
#                            exist, with that install on CMAKE_PREFIX_PATH: FIND_PACKAGE_ARGS must
#                            take the installed copy silently and fetch nothing (what the README
#                            warns about).
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

fail() {
    echo "package: FAILED: $*" >&2
    exit 1
}

# Runs a command quietly; on failure prints its output and what failed, and stops.
quiet() {
    local log="$work/last.log"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        fail "$*"
    fi
}

# readme_block NAME: prints the README's ```cmake block annotated `<!-- snippet: package-test
# NAME -->` on the line above it, as written.
readme_block() {
    local name=$1 text
    if ! text=$(awk -v want="<!-- snippet: package-test $name -->" '
            $0 == want { found = 1; next }
            found == 1 && /^```cmake[ \t]*$/ { found = 2; next }
            found == 1 { exit }
            found == 2 && /^```/ { found = 3; exit }
            found == 2 { print }
            END { if (found != 3) exit 1 }' "$src/README.md"); then
        fail "README.md has no \`\`\`cmake block right below <!-- snippet: package-test $name -->"
    fi
    printf '%s\n' "$text"
}

# consumer <name> <cmake-source-dir> [cmake args...]: configure, build and run one consumer.
consumer() {
    local name=$1 dir=$2
    shift 2
    local build="$work/build-$name"
    echo "package: [$name] configure, build, run"
    quiet cmake -S "$dir" -B "$build" "${common[@]}" "$@"
    quiet cmake --build "$build"
    local out
    if ! out=$("$build/my_app" 2>&1); then
        echo "$out" >&2
        fail "[$name] my_app exited non-zero"
    fi
    echo "package: [$name] $out"
    if [[ -x "$build/redis_consumer" ]]; then
        if ! out=$("$build/redis_consumer" 2>&1); then
            echo "$out" >&2
            fail "[$name] redis_consumer exited non-zero"
        fi
        echo "package: [$name] $out"
    fi
}

# readme_consumer <name> <block-file> [cmake args...]: a project that defines my_app, then runs
# the block (the README's text), then checks what it brought in (consumer.cmake).
readme_consumer() {
    local name=$1 block=$2
    shift 2
    local dir="$work/src-$name"
    mkdir -p "$dir"
    {
        echo "cmake_minimum_required(VERSION 3.24)  # FetchContent's FIND_PACKAGE_ARGS"
        echo "project(workerpool_consumer_$name LANGUAGES CXX)"
        echo "add_executable(my_app \"$here/main.cpp\")"
        echo "# ---- from README.md ----"
        cat "$block"
        echo "# ---- end of the README's block ----"
        echo "include(\"$here/consumer.cmake\")"
    } >"$dir/CMakeLists.txt"
    consumer "$name" "$dir" "$@"
}

# The README's blocks; the FetchContent one also with its URL changed (and nothing else).
mkdir -p "$work/blocks"
readme_block add_subdirectory >"$work/blocks/add_subdirectory.cmake"
readme_block fetch_content >"$work/blocks/fetch_content.cmake"
readme_block find_package >"$work/blocks/find_package.cmake"
with_url() {  # with_url <url>: the FetchContent block with GIT_REPOSITORY's argument replaced
    sed -E "s#^([[:space:]]*GIT_REPOSITORY[[:space:]]+)[^[:space:]]+#\\1$1#" \
        "$work/blocks/fetch_content.cmake"
}
grep -qE '^[[:space:]]*GIT_REPOSITORY[[:space:]]' "$work/blocks/fetch_content.cmake" ||
    fail "the README's FetchContent block has no GIT_REPOSITORY line"
tag=$(awk '$1 == "GIT_TAG" { print $2; exit }' "$work/blocks/fetch_content.cmake")
[[ -n "$tag" ]] || fail "the README's FetchContent block has no GIT_TAG"

# 1. add_subdirectory: the block expects the library in third_party/workerpool.
mkdir -p "$work/src-add_subdirectory/third_party"
ln -s "$src" "$work/src-add_subdirectory/third_party/workerpool"
readme_consumer add_subdirectory "$work/blocks/add_subdirectory.cmake"

# 2. FetchContent through git, from a bare copy of this repository, where the README's GIT_TAG
# must name something that exists: a branch (here or as origin's), a tag, or a commit.
if ! git -C "$src" rev-parse --verify --quiet HEAD >/dev/null; then
    fail "$src is not a git checkout: the README's FetchContent block cannot be fetched from it"
fi
found=""
for ref in "refs/heads/$tag" "refs/tags/$tag" "refs/remotes/origin/$tag" "$tag"; do
    if git -C "$src" rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then
        found=$ref
        break
    fi
done
[[ -n "$found" ]] || fail "the README's GIT_TAG '$tag' names no branch, tag or commit of this repository"
head=$(git -C "$src" rev-parse HEAD)
quiet git clone --quiet --bare "$src" "$work/workerpool.git"
# Build the commit under test: the copy's branch or tag points at HEAD (in CI, a clone of main,
# it does already when the README says main). A commit hash is fetched as it is.
case "$found" in
refs/tags/*) quiet git -C "$work/workerpool.git" update-ref "$found" "$head" ;;
refs/*) quiet git -C "$work/workerpool.git" update-ref "refs/heads/$tag" "$head" ;;
*) head=$(git -C "$src" rev-parse "$found^{commit}") ;;
esac
echo "package: GIT_TAG $tag is $found ($(git -C "$src" rev-parse --short "$found^{commit}")) here; git fetches $(git -C "$src" rev-parse --short "$head")"
if [[ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]]; then
    echo "package: note: uncommitted changes are not in what git fetches (consumers 1 and 3 have them)"
fi
with_url "file://$work/workerpool.git" >"$work/blocks/fetch_content_git.cmake"
readme_consumer fetch_content "$work/blocks/fetch_content_git.cmake" \
    -DFETCHCONTENT_TRY_FIND_PACKAGE_MODE=NEVER -DEXPECT_FETCHED=ON

# 3. FetchContent offline, from the working tree as it is.
readme_consumer fetch_content_source "$work/blocks/fetch_content.cmake" \
    -DFETCHCONTENT_SOURCE_DIR_WORKERPOOL="$src" \
    -DFETCHCONTENT_TRY_FIND_PACKAGE_MODE=NEVER \
    -DEXPECT_SOURCE_DIR="$src"

# 4. Install, as the README says: cmake --install <build tree> --prefix <dir>.
prefix="$work/prefix"
echo "package: [install] cmake --install <build tree> --prefix $prefix"
quiet cmake -S "$src" -B "$work/install-build" "${common[@]}" \
    -DWORKERPOOL_BUILD_TESTS=OFF -DWORKERPOOL_BUILD_EXAMPLES=OFF -DWORKERPOOL_BUILD_BENCH=OFF
quiet cmake --install "$work/install-build" --prefix "$prefix"
for f in include/workerpool/version.hpp include/workerpool/bounded_queue.hpp \
         include/workerpool/prometheus.hpp \
         share/cmake/workerpool/workerpool-config.cmake \
         share/cmake/workerpool/workerpool-config-version.cmake \
         share/cmake/workerpool/workerpool-targets.cmake; do
    [[ -f "$prefix/$f" ]] || fail "the install lacks $f"
done
if [[ -d "$prefix/lib" || -d "$prefix/lib64" || -d "$prefix/bin" ]]; then
    (cd "$prefix" && find . -type f) >&2
    fail "a header-only install put files under lib/ or bin/ (above)"
fi

# 5. find_package from that prefix.
readme_consumer find_package "$work/blocks/find_package.cmake" \
    -DCMAKE_PREFIX_PATH="$prefix" -DEXPECT_PREFIX="$prefix" -DCHECK_WRONG_VERSIONS=ON

# 6. The FetchContent block with an install around: it must take the install, silently, and not
# fetch (its URL leads nowhere, so a fetch would fail).
with_url "file://$work/no-such-repository.git" >"$work/blocks/fetch_content_nowhere.cmake"
readme_consumer fetch_content_finds_install "$work/blocks/fetch_content_nowhere.cmake" \
    -DCMAKE_PREFIX_PATH="$prefix" -DEXPECT_PREFIX="$prefix"

echo "package: all consumers built and ran"
