#!/usr/bin/env bash
# Checks that the README's quick start is exactly examples/quick_start.cpp (which CI compiles), so
# the code a reader copies is code that builds. Usage: scripts/check-readme.sh [repo-root]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
snippet=$(awk '/^```cpp$/ { inside = 1; n++; next } /^```$/ { inside = 0 } inside && n == 1' "$root/README.md")
if ! diff <(printf '%s\n' "$snippet") "$root/examples/quick_start.cpp"; then
    echo "check-readme: the README's first C++ block differs from examples/quick_start.cpp" >&2
    exit 1
fi
echo "check-readme: README quick start matches examples/quick_start.cpp"
