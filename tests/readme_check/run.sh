#!/usr/bin/env bash
# Tests scripts/check-readme.sh on small made-up repositories: one whose blocks all work, and one
# per mistake it must catch (each must fail the check, with a message that says what is wrong).
# Usage: tests/readme_check/run.sh <workerpool-source-dir>   (ctest runs it as readme_checker)
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 <workerpool-source-dir>" >&2
    exit 2
fi
checker="$(cd "$1" && pwd -P)/scripts/check-readme.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/workerpool-readme-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
fence='```'

# repo <name>: a fresh made-up repository; prints its path. README.md comes from stdin.
repo() {
    local dir="$work/$1"
    mkdir -p "$dir/include" "$dir/docs" "$dir/tests/package"
    cat >"$dir/README.md"
    echo "$dir"
}

# expect <name> <0|1> <phrase> [checker args...]: runs the checker on repository <name>; its exit
# status must be 0 or non-zero as said, and its output must contain <phrase>.
expect() {
    local name=$1 want=$2 phrase=$3
    shift 3
    local out status=0
    out=$("$checker" "$@" "$work/$name" 2>&1) || status=$?
    if [[ $want -eq 0 && $status -ne 0 ]] || [[ $want -ne 0 && $status -eq 0 ]]; then
        echo "FAIL: [$name] exit status $status, expected $([[ $want -eq 0 ]] && echo 0 || echo non-zero):"
        echo "$out" | tail -n 25 | sed 's/^/    /'
        failures=$((failures + 1))
    elif ! grep -qF -- "$phrase" <<<"$out"; then
        echo "FAIL: [$name] the output lacks \"$phrase\":"
        echo "$out" | tail -n 25 | sed 's/^/    /'
        failures=$((failures + 1))
    else
        echo "ok:   [$name] $([[ $want -eq 0 ]] && echo passes || echo fails) with \"$phrase\""
    fi
}

# --- a repository whose every block works ------------------------------------------------------------
good=$(repo good <<EOF
# good

${fence}sh
mkdir -p build && echo made >build/made-by-readme
grep -q nothing /dev/null || echo "a handled failure is fine"
sleep 30 &
kill \$!
${fence}

<!-- snippet: skip: what a run printed -->
${fence}text
made
${fence}

<!-- snippet: run -->
${fence}cpp
#include <cstdio>
int main() { std::puts("hello from a snippet"); }
${fence}

<!-- snippet: file example.cpp -->
${fence}cpp
int twice(int x) { return 2 * x; }
${fence}

<!-- snippet: package-test demo -->
${fence}cmake
target_link_libraries(my_app PRIVATE demo::demo)
${fence}
EOF
)
printf 'int twice(int x) { return 2 * x; }\n' >"$good/example.cpp"
printf 'readme_block demo >demo.cmake\n' >"$good/tests/package/run.sh"
cat >"$good/docs/more.md" <<EOF
# more: runs after the README's blocks, in the same scratch copy

${fence}bash
test "\$(cat build/made-by-readme)" = made
${fence}
EOF
expect good 0 "6 blocks: 2 shell, 2 C++, 1 CMake (package test), 1 not run with a reason"
expect good 0 "cpp    compiled, ran"
expect good 0 "NOT RUN: what a run printed"
expect good 0 "would compile, run" --list
if [[ -e "$good/build" ]]; then
    echo "FAIL: [good] a shell block wrote into the repository instead of the scratch copy"
    failures=$((failures + 1))
fi

# --- one mistake each ----------------------------------------------------------------------------
repo unannotated_text >/dev/null <<EOF
${fence}text
some output
${fence}
EOF
expect unannotated_text 1 "a \`\`\`text block is not checked: say why it is not run"

repo no_language >/dev/null <<EOF
${fence}
a diagram
${fence}
EOF
expect no_language 1 "a block without a language is not checked"

repo failing_chain >/dev/null <<EOF
${fence}sh
false && echo "never printed"
echo "bash -e alone would go on to this line"
${fence}
EOF
expect failing_chain 1 "exit 1 from line 1 of the block"

pids="$work/pids"
repo leftovers >/dev/null <<EOF
${fence}sh
sleep 300 &
echo \$! >>"$pids"
setsid sleep 301 </dev/null >/dev/null 2>&1 &
echo \$! >>"$pids"
${fence}
EOF
expect leftovers 1 "the block left 2 process(es) running, killed now"
while read -r pid; do
    # Gone, or a zombie: under ctest, which reaps only its own children, an orphan killed by the
    # checker stays one until ctest exits.
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    if [[ -n "$state" && "$state" != Z ]]; then
        echo "FAIL: [leftovers] process $pid, started by the block, is still running"
        kill "$pid"
        failures=$((failures + 1))
    fi
done <"$pids"

repo slow >/dev/null <<EOF
${fence}sh
sleep 60
${fence}
EOF
WORKERPOOL_SNIPPET_TIMEOUT=2 expect slow 1 "the block ran past 2s"

repo bad_cpp >/dev/null <<EOF
${fence}cpp
int main() { return undeclared; }
${fence}
EOF
expect bad_cpp 1 "README.md:1: the C++ block does not compile"

repo failing_cpp >/dev/null <<EOF
<!-- snippet: run -->
${fence}cpp
int main() { return 3; }
${fence}
EOF
expect failing_cpp 1 "the C++ block exited with 3"

repo drifted_copy >/dev/null <<EOF
<!-- snippet: file example.cpp -->
${fence}cpp
int twice(int x) { return 2 * x; }
${fence}
EOF
printf 'int twice(int x) { return x + x; }\n' >"$work/drifted_copy/example.cpp"
expect drifted_copy 1 "the block differs from example.cpp"

repo skip_without_reason >/dev/null <<EOF
<!-- snippet: skip: -->
${fence}sh
rm -rf /
${fence}
EOF
expect skip_without_reason 1 "'skip:' needs a reason after the colon"

repo detached_annotation >/dev/null <<EOF
<!-- snippet: skip: not runnable -->

${fence}sh
true
${fence}
EOF
expect detached_annotation 1 "a snippet annotation must be on the line right above a fence"

repo unknown_directive >/dev/null <<EOF
<!-- snippet: compile-only -->
${fence}cpp
int f() { return 1; }
${fence}
EOF
expect unknown_directive 1 "unknown snippet directive 'compile-only'"

repo cmake_unbuilt >/dev/null <<EOF
${fence}cmake
find_package(demo REQUIRED)
${fence}

<!-- snippet: package-test nowhere -->
${fence}cmake
find_package(demo REQUIRED)
${fence}
EOF
expect cmake_unbuilt 1 "a cmake block must be built by tests/package"
expect cmake_unbuilt 1 "tests/package/run.sh does not build this block (no 'readme_block nowhere')"

repo indented >/dev/null <<EOF
- a list item:

  ${fence}sh
  true
  ${fence}
EOF
expect indented 1 "an indented fence"

repo unclosed >/dev/null <<EOF
${fence}sh
true
EOF
expect unclosed 1 "is never closed"

if [[ $failures -ne 0 ]]; then
    echo "$failures readme-checker test(s) failed"
    exit 1
fi
echo "all readme-checker tests passed"
