#!/usr/bin/env bash
# Checks that misuse of the dispatcher fails to compile with a message that says what to write:
# each case must fail, and its diagnostics must contain the static_assert's phrase. Each file also
# has a control build that must compile, so a broken compiler or include path cannot pass.
#
# Usage: check.sh [compiler] [include-dir]
#   compiler     default: $CXX, else g++
#   include-dir  default: the repository's include/ (found from this script's location)
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cxx="${1:-${CXX:-g++}}"
include="${2:-$here/../../../include}"
flags=(-std=c++20 -fsyntax-only -I"$include")
failures=0

# expect_success <file> <extra flags...>
expect_success() {
    local file=$1
    shift
    local out
    if ! out=$("$cxx" "${flags[@]}" "$@" "$here/$file" 2>&1); then
        echo "FAIL: control build of $file $* did not compile:"
        echo "$out" | head -20
        failures=$((failures + 1))
    else
        echo "ok:   $file $* compiles (control)"
    fi
}

# expect_error <file> <phrase> [--not <absent-phrase>] <extra flags...>: the file must fail to
# compile with <phrase> in its diagnostics and, with --not, without <absent-phrase> (a message that
# would send the user the wrong way).
expect_error() {
    local file=$1 phrase=$2 absent=""
    shift 2
    if [[ "${1:-}" == "--not" ]]; then
        absent=$2
        shift 2
    fi
    local out
    if out=$("$cxx" "${flags[@]}" "$@" "$here/$file" 2>&1); then
        echo "FAIL: $file $* compiled, but it must not"
        failures=$((failures + 1))
    elif ! grep -qF -- "$phrase" <<<"$out"; then
        echo "FAIL: $file $* failed to compile without the message \"$phrase\":"
        echo "$out" | grep -E "error" | head -10
        failures=$((failures + 1))
    elif [[ -n "$absent" ]] && grep -qF -- "$absent" <<<"$out"; then
        echo "FAIL: $file $* also printed the misleading message \"$absent\""
        failures=$((failures + 1))
    else
        echo "ok:   $file $* fails with \"$phrase\"${absent:+ only}"
    fi
}

handler_phrase="the handler must be callable as handler(Request&, const std::stop_token&) or handler(Request&)"
move_phrase="Request must be nothrow move-constructible"
destructor_phrase="Request's destructor must not throw"

by_value_phrase="the handler takes the request by value, so what it writes into the request (state kept across retries, results read by on_success) is lost with its copy: take it as Request&"
lvalue_phrase="take the request as an rvalue: pass std::move(request). The request is moved from only when the call returns accepted"

expect_success bad_handler.cpp -DVARIANT=0
expect_error bad_handler.cpp "$handler_phrase" -DVARIANT=1
expect_error bad_handler.cpp "$handler_phrase" -DVARIANT=2
expect_error bad_handler.cpp "$handler_phrase" -DVARIANT=3
expect_error bad_handler.cpp "$handler_phrase" -DVARIANT=4
expect_error bad_handler.cpp "$handler_phrase" -DVARIANT=5
expect_success bad_handler.cpp -DVARIANT=10
expect_success bad_handler.cpp -DVARIANT=11
for variant in 0 10 11 12; do
    expect_success by_value_handler.cpp -DVARIANT=$variant
done
for variant in 1 2 3 4 5; do
    expect_error by_value_handler.cpp "dispatcher<Request>: $by_value_phrase" --not "$handler_phrase" -DVARIANT=$variant
done
expect_error by_value_handler.cpp "handler_map::on: $by_value_phrase" --not "must be callable" -DVARIANT=6
expect_success lvalue_submit.cpp -DVARIANT=0
for variant in 1 2 3 4 5 6 7 8; do
    expect_error lvalue_submit.cpp "$lvalue_phrase" -DVARIANT=$variant
done
expect_success not_nothrow_movable.cpp -DCONTROL
expect_error not_nothrow_movable.cpp "$move_phrase"
expect_success throwing_destructor.cpp -DCONTROL
expect_error throwing_destructor.cpp "$destructor_phrase" --not "$move_phrase"

if [ "$failures" -ne 0 ]; then
    echo "$failures compile-error check(s) failed"
    exit 1
fi
echo "all compile-error checks passed"
