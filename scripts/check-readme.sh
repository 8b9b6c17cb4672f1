#!/usr/bin/env bash
# Checks every fenced code block of README.md and docs/**/*.md, so that what a reader copies works
# as written. What happens to a block depends on its language and on an optional annotation, an
# HTML comment on the line right above the opening fence (GitHub and Doxygen do not show it):
#
#   ```sh, ```bash     run with `bash -e -o pipefail`, in document order, in one scratch copy of
#                      the repository (its tracked and unignored files; no build/), each in its own
#                      process group with a time limit. A block must not leave a process running:
#                      anything left in its group, or with its working directory in the scratch
#                      copy (a daemonised server), 5 s after the block ended fails the check and
#                      is killed. So a block that needs a server starts it, uses it and stops it.
#   ```cpp             compiled (-std=c++20 -Wall -Wextra -Wpedantic -Werror against include/),
#                      all blocks in one compiler call.
#                        <!-- snippet: run -->        also linked and run (exit 0, 120 s at most)
#                        <!-- snippet: file PATH -->  must be identical to PATH (e.g. an example)
#   ```cmake           must be a consumer that tests/package builds:
#                        <!-- snippet: package-test NAME -->  tests/package/run.sh must build the
#                        block (it extracts it from README.md by that annotation: readme_block NAME)
#   anything else      (```text, a fence without a language, ...) and any block that cannot run
#                      as is must say why:  <!-- snippet: skip: REASON -->
#
# Directives combine with ';' (`<!-- snippet: file examples/quick_start.cpp; run -->`); `skip:`
# comes alone, and its reason runs to the end of the comment. A block
# without what its language needs, an annotation that is not right above a fence, an indented or
# ~~~ fence, or an unknown directive fails the check: no block is passed over silently. Every
# skipped block is listed with its reason, and counted.
#
# Usage: scripts/check-readme.sh [--list] [repo-root]
#   --list   only read the blocks and print what would be done with each (nothing compiled or run)
# Environment: CXX (default c++), WORKERPOOL_SNIPPET_TIMEOUT (seconds per shell block, default
# 900), WORKERPOOL_KEEP_SNIPPETS=1 keeps the scratch directory.
set -euo pipefail

list_only=false
if [[ "${1:-}" == "--list" ]]; then
    list_only=true
    shift
fi
if [[ $# -gt 1 ]]; then
    echo "usage: scripts/check-readme.sh [--list] [repo-root]" >&2
    exit 2
fi
root=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd -P)
cxx=${CXX:-c++}
block_timeout=${WORKERPOOL_SNIPPET_TIMEOUT:-900}

work=$(mktemp -d "${TMPDIR:-/tmp}/workerpool-snippets.XXXXXX")
work=$(cd "$work" && pwd -P)
scratch="$work/scratch"
cleanup() {
    if [[ -n "${WORKERPOOL_KEEP_SNIPPETS:-}" ]]; then
        echo "check-readme: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

say() { printf 'check-readme: %s\n' "$*"; }
problems=()
problem() {
    problems+=("$1")
    say "FAILED: $1" >&2
}

# --- 1. the blocks ---------------------------------------------------------------------------------
# extract FILE: writes each fenced block of FILE to $work/blocks/<n> and one line per block to
# $work/index: n <TAB> file:line <TAB> language <TAB> annotation. Prints format errors.
mkdir -p "$work/blocks" "$work/logs"
: >"$work/index"
extract() {
    local file=$1 rel=$2
    awk -v rel="$rel" -v out="$work/blocks" -v index_file="$work/index" -v start_n="$(wc -l <"$work/index")" '
        function fail(msg) { print rel ":" NR ": " msg; bad = 1 }
        BEGIN { n = start_n; inside = 0; prev = "" }
        {
            if (inside) {
                if ($0 ~ /^```[ \t]*$/) { inside = 0; close(path); prev = ""; next }
                print $0 > path
                next
            }
            if ($0 ~ /^[ \t]+(```|~~~)/) { fail("an indented fence: put fences at the start of the line") }
            if ($0 ~ /^~~~/) { fail("a ~~~ fence: use ```") }
            if ($0 ~ /^```/) {
                lang = substr($0, 4); gsub(/^[ \t]+|[ \t]+$/, "", lang)
                note = ""
                if (prev ~ /^<!-- snippet:.*-->[ \t]*$/) {
                    note = prev; sub(/^<!-- snippet:[ \t]*/, "", note); sub(/[ \t]*-->[ \t]*$/, "", note)
                }
                n++; path = out "/" n; printf "" > path
                printf "%d\t%s:%d\t%s\t%s\n", n, rel, NR, lang, note >> index_file
                inside = 1; start = NR; prev = ""
                next
            }
            if (prev ~ /^<!-- snippet:/) { fail("a snippet annotation must be on the line right above a fence (line " NR - 1 ")") }
            prev = $0
        }
        END {
            if (inside) { fail("the block opened on line " start " is never closed") }
            if (prev ~ /^<!-- snippet:/) { fail("a snippet annotation at the end of the file, above no fence") }
            exit bad
        }' "$file"
}

files=("$root/README.md")
if [[ -d "$root/docs" ]]; then
    while IFS= read -r -d '' f; do
        files+=("$f")
    done < <(find "$root/docs" -name '*.md' -type f -print0 | sort -z)
fi
for f in "${files[@]}"; do
    if ! out=$(extract "$f" "${f#"$root"/}"); then
        while IFS= read -r line; do
            problem "$line"
        done <<<"$out"
    fi
done

# --- 2. what to do with each block ---------------------------------------------------------------
ids=() where=() langs=() skip_reason=() want_run=() same_as=() package_name=()
while IFS=$'\t' read -r id at lang note; do
    ids+=("$id")
    where+=("$at")
    langs+=("$lang")
    reason="" run=false file="" pkg=""
    if [[ "$note" == skip:* ]]; then
        # A skipped block takes nothing else, so its reason may hold ';'.
        reason="${note#skip:}"
        reason="${reason#"${reason%%[![:space:]]*}"}"
        [[ -n "$reason" ]] || problem "$at: 'skip:' needs a reason after the colon"
    elif [[ -n "$note" ]]; then
        IFS=';' read -r -a directives <<<"$note"
        for d in "${directives[@]}"; do
            d="${d#"${d%%[![:space:]]*}"}"
            d="${d%"${d##*[![:space:]]}"}"
            case "$d" in
            skip:*) problem "$at: 'skip:' must come alone, first in the annotation" ;;
            run) run=true ;;
            "file "*) file="${d#file }" ;;
            "package-test "*) pkg="${d#package-test }" ;;
            *) problem "$at: unknown snippet directive '$d' (skip: REASON, run, file PATH, package-test NAME)" ;;
            esac
        done
    fi
    skip_reason+=("$reason")
    want_run+=("$run")
    same_as+=("$file")
    package_name+=("$pkg")
done <"$work/index"

# kind_of <i>: shell, cpp, cmake, skip, or bad:<why>
kind_of() {
    local i=$1
    if [[ -n "${skip_reason[$i]}" ]]; then
        echo skip
        return
    fi
    case "${langs[$i]}" in
    sh | bash | shell) echo shell ;;
    cpp | c++)
        echo cpp ;;
    cmake)
        if [[ -n "${package_name[$i]}" ]]; then
            echo cmake
        else
            echo "bad:a cmake block must be built by tests/package (<!-- snippet: package-test NAME -->) or say why not (<!-- snippet: skip: REASON -->)"
        fi
        ;;
    "") echo "bad:a block without a language is not checked: give it one, or say why it is not run (<!-- snippet: skip: REASON -->)" ;;
    *) echo "bad:a \`\`\`${langs[$i]} block is not checked: say why it is not run (<!-- snippet: skip: REASON -->)" ;;
    esac
}

kinds=()
for i in "${!ids[@]}"; do
    k=$(kind_of "$i")
    kinds+=("$k")
    at=${where[$i]}
    case "$k" in
    bad:*) problem "$at: ${k#bad:}" ;;
    shell)
        if [[ -n "${same_as[$i]}${package_name[$i]}" ]]; then
            problem "$at: a shell block takes only 'skip:' or 'run'"
        fi
        ;;
    cpp)
        if [[ -n "${package_name[$i]}" ]]; then
            problem "$at: 'package-test' is for cmake blocks"
        fi
        if [[ -n "${same_as[$i]}" ]] && ! diff -u "$root/${same_as[$i]}" "$work/blocks/${ids[$i]}" >"$work/logs/${ids[$i]}.diff" 2>&1; then
            problem "$at: the block differs from ${same_as[$i]}:"$'\n'"$(head -n 40 "$work/logs/${ids[$i]}.diff")"
        fi
        ;;
    cmake)
        if ! grep -qE "readme_block ${package_name[$i]}( |$)" "$root/tests/package/run.sh" 2>/dev/null; then
            problem "$at: tests/package/run.sh does not build this block (no 'readme_block ${package_name[$i]}')"
        fi
        ;;
    esac
done

# --- 3. C++ blocks: compiled in one call; some linked and run --------------------------------------
cpp_ids=()
for i in "${!ids[@]}"; do
    [[ "${kinds[$i]}" == cpp ]] && cpp_ids+=("$i")
done
declare -A outcome
if ! $list_only && [[ ${#cpp_ids[@]} -gt 0 ]]; then
    mkdir -p "$work/cpp"
    sources=()
    for i in "${cpp_ids[@]}"; do
        cp "$work/blocks/${ids[$i]}" "$work/cpp/snippet_${ids[$i]}.cpp"
        sources+=("snippet_${ids[$i]}.cpp")
    done
    say "compiling ${#cpp_ids[@]} C++ block(s) with $cxx"
    if ! (cd "$work/cpp" && "$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror -pthread \
        -I"$root/include" -c "${sources[@]}") >"$work/logs/cpp.log" 2>&1; then
        cat "$work/logs/cpp.log" >&2
        for i in "${cpp_ids[@]}"; do
            [[ -f "$work/cpp/snippet_${ids[$i]}.o" ]] || problem "${where[$i]}: the C++ block does not compile (snippet_${ids[$i]}.cpp above)"
        done
    fi
    for i in "${cpp_ids[@]}"; do
        obj="$work/cpp/snippet_${ids[$i]}.o"
        [[ -f "$obj" ]] || continue
        outcome[$i]="compiled"
        if ${want_run[$i]}; then
            if ! "$cxx" -pthread "$obj" -o "${obj%.o}" >"$work/logs/link_${ids[$i]}.log" 2>&1; then
                problem "${where[$i]}: the C++ block does not link:"$'\n'"$(cat "$work/logs/link_${ids[$i]}.log")"
                continue
            fi
            status=0
            (cd "$work/cpp" && timeout 120 "${obj%.o}") </dev/null >"$work/logs/run_${ids[$i]}.log" 2>&1 || status=$?
            if [[ $status -ne 0 ]]; then
                problem "${where[$i]}: the C++ block exited with $status:"$'\n'"$(tail -n 20 "$work/logs/run_${ids[$i]}.log")"
            else
                outcome[$i]="compiled, ran"
            fi
        fi
    done
fi

# --- 4. shell blocks: in document order, in one scratch copy ---------------------------------------
make_scratch() {
    mkdir -p "$scratch"
    local top
    top=$(git -C "$root" rev-parse --show-toplevel 2>/dev/null || true)
    if [[ -n "$top" && "$(cd "$top" && pwd -P)" == "$root" ]]; then
        # What a clone would hold, plus new files not yet committed; nothing ignored (no build/).
        git -C "$root" ls-files -z --cached --others --exclude-standard |
            (cd "$root" && while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done) |
            tar -C "$root" --null -T - -cf - | tar -C "$scratch" -xf -
    else
        (cd "$root" && tar --exclude=./build -cf - .) | tar -C "$scratch" -xf -
    fi
}

# Process ids (one a line) in process group $1, or whose working directory is in the scratch copy.
# Reads /proc without a process per entry: this runs between blocks, on busy machines.
leftovers() {
    local group=$1 f stat
    {
        for f in /proc/[0-9]*/stat; do
            read -r stat <"$f" 2>/dev/null || continue
            stat=${stat##*) }  # after the command name, which may hold spaces
            set -f
            # shellcheck disable=SC2086 # split the fields: state ppid pgrp ...
            set -- $stat
            set +f
            if [[ "${3:-}" == "$group" && "$1" != [ZX] ]]; then  # a zombie is gone already
                f=${f#/proc/}
                echo "${f%/stat}"
            fi
        done
        find /proc/[0-9]*/cwd -maxdepth 0 \( -lname "$scratch" -o -lname "$scratch/*" \) \
            2>/dev/null | cut -d/ -f3  # a zombie has no cwd
    } | sort -u | grep -vx -e "$$" -e "$BASHPID" || true
}

describe() {
    local p
    for p in "$@"; do
        printf '  %s %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-120)"
    done
}

# strict FILE: prints FILE with each plain command line wrapped so that its failure ends the script.
# `bash -e` alone lets `a && b` fail on a line that is not the last one and goes on; a reader's
# shell would print the error, and the check must fail. Plain means: not blank or a comment, not
# continued (a trailing \, |, && or ||, or the line after one), not opening or closing a compound
# command (if, for, while, case, {, (, ...), not a here-document or its body. Other lines keep
# `bash -e`'s rules.
strict() {
    awk '
        function plain(l) {
            if (l ~ /^[ \t]*(#|$)/) return 0
            if (l ~ /(\\|\||&&)[ \t]*$/) return 0
            if (l ~ /<</) return 0
            if (l ~ /^[ \t]*(if|then|else|elif|fi|for|while|until|do|done|case|esac|function|select|[{}()])([ \t;]|$)/) return 0
            if (l ~ /^[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\(\)/) return 0
            if (l ~ /[{(][ \t]*$/ || l ~ /;;[ \t]*$/) return 0
            if (l ~ /^[^(]*\)/) return 0  # a case pattern, or the end of a subshell
            return 1
        }
        heredoc != "" { print; if ($0 ~ "^[ \t]*" heredoc "[ \t]*$") heredoc = ""; next }
        {
            line = $0
            if (!continued && plain(line)) {
                print "{"
                print line
                printf "} || { rc=$?; echo \"check-readme: exit $rc from line %d of the block\" >&2; exit $rc; }\n", NR
            } else {
                print line
            }
            if (match(line, /<<-?[ \t]*["'\'']?[A-Za-z_][A-Za-z0-9_]*/)) {
                heredoc = substr(line, RSTART, RLENGTH)
                sub(/^<<-?[ \t]*["'\'']?/, "", heredoc)
            }
            continued = line ~ /(\\|\||&&)[ \t]*$/
        }' "$1"
}

run_shell_block() {
    local i=$1 id=${ids[$1]} at=${where[$1]}
    local log="$work/logs/$id.log" status=0 t0=$SECONDS pid
    say "running $at (log: the last lines on failure)"
    strict "$work/blocks/$id" >"$work/blocks/$id.sh"
    # timeout makes itself a process group leader and, on expiry, signals the whole group.
    (cd "$scratch" && exec timeout --kill-after=10 "$block_timeout" bash -e -o pipefail "$work/blocks/$id.sh") \
        </dev/null >"$log" 2>&1 &
    pid=$!
    wait "$pid" || status=$?
    local dt=$((SECONDS - t0)) left=() n
    for n in 1 2 3 4 5 6 7 8 9 10; do
        mapfile -t left < <(leftovers "$pid")
        [[ ${#left[@]} -eq 0 ]] && break
        sleep 0.5
    done
    if [[ ${#left[@]} -gt 0 ]]; then
        problem "$at: the block left ${#left[@]} process(es) running, killed now (stop what a block starts):"$'\n'"$(describe "${left[@]}")"
        kill -TERM "${left[@]}" 2>/dev/null || true
        sleep 1
        mapfile -t left < <(leftovers "$pid")
        [[ ${#left[@]} -eq 0 ]] || kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    if [[ $status -eq 124 || $status -eq 137 ]]; then
        problem "$at: the block ran past ${block_timeout}s:"$'\n'"$(tail -n 30 "$log")"
    elif [[ $status -ne 0 ]]; then
        problem "$at: the block failed (exit $status):"$'\n'"$(tail -n 30 "$log")"
    else
        outcome[$i]="ran in ${dt} s"
    fi
}

if ! $list_only; then
    for i in "${!ids[@]}"; do
        if [[ "${kinds[$i]}" == shell ]]; then
            [[ -d "$scratch" ]] || make_scratch
            run_shell_block "$i"
        fi
    done
fi

# --- 5. the list ---------------------------------------------------------------------------------
shells=0 cpps=0 cmakes=0 skips=0
echo
say "every fenced block of README.md and docs/:"
for i in "${!ids[@]}"; do
    lang=${langs[$i]:-(none)}
    done_as=${outcome[$i]:-}
    case "${kinds[$i]}" in
    shell)
        shells=$((shells + 1))
        if $list_only; then done_as="would run"; fi
        what=${done_as:-FAILED} ;;
    cpp)
        cpps=$((cpps + 1))
        if $list_only; then
            done_as="would compile"
            if ${want_run[$i]}; then done_as+=", run"; fi
        fi
        what=${done_as:-FAILED}
        if [[ -n "${same_as[$i]}" ]]; then what+="; identical to ${same_as[$i]}"; fi ;;
    cmake)
        cmakes=$((cmakes + 1))
        what="built by tests/package (readme_block ${package_name[$i]}; CI's package step)" ;;
    skip)
        skips=$((skips + 1))
        what="NOT RUN: ${skip_reason[$i]}" ;;
    *) what="FAILED: ${kinds[$i]#bad:}" ;;
    esac
    printf '  %-30s %-6s %s\n' "${where[$i]}" "$lang" "$what"
done
say "${#ids[@]} blocks: $shells shell, $cpps C++, $cmakes CMake (package test), $skips not run with a reason"
if [[ ${#problems[@]} -ne 0 ]]; then
    say "${#problems[@]} problem(s):" >&2
    printf '  %s\n' "${problems[@]}" >&2
    exit 1
fi
$list_only || say "every block works as written"
