#!/usr/bin/env bash
# Builds the API reference from the `///` comments with doxygen (Debian package `doxygen`), using
# docs/Doxyfile, into build/docs/html. Fails on any doxygen warning, such as an undocumented public
# declaration. Usage: scripts/build-docs.sh (from any directory)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v doxygen >/dev/null; then
    echo "build-docs: doxygen not found; install it with: sudo apt-get install doxygen" >&2
    exit 1
fi
echo "build-docs: $(doxygen --version | head -n 1)"

# Doxygen creates OUTPUT_DIRECTORY only when its parent exists; old pages must not linger.
rm -rf build/docs/html
mkdir -p build/docs
log=build/docs/warnings.log

# WARN_AS_ERROR = FAIL_ON_WARNINGS makes doxygen exit non-zero after printing every warning. The
# log is checked too, in case some doxygen version only warns (with QUIET, stderr is warnings only).
status=0
doxygen docs/Doxyfile 2>"$log" || status=$?
cat "$log" >&2
if [[ $status -ne 0 || -s $log ]]; then
    echo "build-docs: FAILED: doxygen exited with $status; its warnings are above and in $log" >&2
    exit 1
fi
echo "build-docs: no warnings; open $(pwd)/build/docs/html/index.html"
