#!/usr/bin/env bash
# Builds the API reference from the `///` comments with doxygen (Debian package `doxygen`), using
# docs/Doxyfile, into build/docs/html: README.md as the main page, docs/design.md and
# docs/guarantees.md as pages. Fails on any doxygen warning, such as an undocumented public
# declaration, on an image a page shows but the site lacks, or on a missing page.
# Usage: scripts/build-docs.sh (from any directory)
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
# Every image a page shows must have been copied next to it (Doxygen copies only what it finds in
# IMAGE_PATH), and the design and guarantees documents must be pages of the site.
html=build/docs/html
missing=()
while IFS= read -r src; do
    [[ -f "$html/$src" ]] || missing+=("$src")
done < <(grep -oh '<img [^>]*src="[^"]*"' "$html"/*.html | sed 's/.*src="\([^"]*\)"/\1/' |
         grep -v -E '^(https?:|data:)' | sort -u)
if [[ ${#missing[@]} -ne 0 ]]; then
    echo "build-docs: FAILED: pages show images that are not in $html: ${missing[*]}" >&2
    exit 1
fi
for page in md_docs_design.html md_docs_guarantees.html; do
    if [[ ! -f "$html/$page" ]]; then
        echo "build-docs: FAILED: $html/$page is missing (docs/Doxyfile's INPUT)" >&2
        exit 1
    fi
done
echo "build-docs: no warnings; images and pages in place; open $(pwd)/$html/index.html"
