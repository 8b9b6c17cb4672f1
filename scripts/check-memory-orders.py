#!/usr/bin/env python3
"""Checks the memory-order tags of include/ against the conventions below and the table in
docs/design.md ("Memory orderings"). Run by .ci/run; exits 1 on a finding that is not allowed.

    scripts/check-memory-orders.py                 # check include/ (the allow-list applies)
    scripts/check-memory-orders.py --self-test     # check the checker on its fixtures
    scripts/check-memory-orders.py --no-allow      # every finding, allowed or not
    scripts/check-memory-orders.py --keys          # every finding, as the allow-list spells it

The conventions (docs/design.md, "Memory orderings", says the same):

1. A tag looks like [A1] or [Q3-rel]: one or two capital letters, a number, and optionally a
   dash and a lower-case side. A tag is written in a `//` comment, never as "[A1]-like".
2. Every atomic operation in include/ whose order is memory_order_acquire, _release or _acq_rel
   has a tag in a comment on one of its lines (a trailing comment, or one inside a statement
   that spans lines) or in the `//` lines directly above its statement.
3. Every memory_order_relaxed operation has a comment saying why (say "statistics only", or
   "published by [A1]"): on one of its lines, directly above its statement, or directly above
   the paragraph of statements it belongs to (consecutive lines, up to a blank line or a brace).
4. Every tag appears on at least two operations that make up both sides of its pair: at least
   one releasing (release, acq_rel or seq_cst; a store or a read-modify-write) and one acquiring
   (acquire, acq_rel or seq_cst; a load, a wait or a read-modify-write). A tag that appears on
   a single read-modify-write passes when that operation's comment names its partner
   ("pairs with [X]", where [X] may be the tag itself for an RMW that pairs with its own
   earlier executions on other threads).
5. A tag has one meaning. The non-seq_cst operations it labels (those with a comment line that
   opens with the tag) all act on one atomic object (a pair synchronises through one object;
   only seq_cst Dekker pairs span two), and it appears in one file only. The second is a warning, not a failure: a Dekker pair whose two sides live in two
   components (the queue's claim and the dispatcher's idle count) legitimately spans files.
6. Every tag used in include/ has a row in docs/design.md's table (the tags of a row are those
   in its first cell), every row's tags are used on operations in include/, and no tag has two
   rows.
7. No standalone std::atomic_thread_fence (ThreadSanitizer does not model fences).

Known failures can be listed, one finding per line as this script prints it without the line
number ("path: message"), in scripts/memory-orders.allow; they are reported but do not fail the
check. An entry that no longer fails is itself a failure, so the list only ever shrinks.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOW = ROOT / "scripts" / "memory-orders.allow"

TAG = re.compile(r"\[([A-Z]{1,2}[0-9]+(?:-[a-z]+)?)\]")
ORDER = re.compile(r"std::memory_order(?:_|::)(relaxed|consume|acquire|release|acq_rel|seq_cst)\b")
CALL = re.compile(r"(\w+)\s*(?:\.|->)\s*(load|store|exchange|compare_exchange_weak|"
                  r"compare_exchange_strong|fetch_add|fetch_sub|fetch_and|fetch_or|fetch_xor|"
                  r"wait|test_and_set|test|clear)\s*\(")
RMW = {"exchange", "compare_exchange_weak", "compare_exchange_strong", "fetch_add", "fetch_sub",
       "fetch_and", "fetch_or", "fetch_xor", "test_and_set"}
LOADS = {"load", "wait", "test"}
STORES = {"store", "clear"}
# The tags a comment line opens with ("[D1]/[D2] ...", "[S0] [S1] ..."): the operation's own.
LEADING = re.compile(r"^(?:\s*(?:\[[A-Z]{1,2}[0-9]+(?:-[a-z]+)?\]|/|,|and\b))*")
PAIRS_WITH = re.compile(r"pairs\s+with\s+\[([A-Z]{1,2}[0-9]+(?:-[a-z]+)?)\]")


@dataclass
class Line:
    code: str       # the line with comments and literals blanked out
    comment: str    # the text of its `//` or `/* */` comments, `///` doc comments excluded
    doc: bool       # the line is a `///` doc comment and nothing else
    doc_text: str = ""  # the text of its `///` comment


@dataclass
class Operation:
    path: str
    line: int                # 1-based, where the memory_order argument is
    orders: set[str]
    method: str              # load, store, fetch_add, ...; "" if not recognised
    obj: str                 # the atomic's name (last identifier before the call); "" if unknown
    text: str                # the statement, whitespace collapsed
    comment: str             # comments on its lines and directly above its statement
    reason: str              # comment text that may explain a relaxed order (a superset)
    tags: list[str] = field(default_factory=list)    # every tag in `comment`
    labels: list[str] = field(default_factory=list)  # the tags that open one of its comment lines

    def releases(self) -> bool:
        return bool(self.orders & {"release", "acq_rel", "seq_cst"}) and (
            self.method in STORES or self.method in RMW or self.method == "")

    def acquires(self) -> bool:
        return bool(self.orders & {"acquire", "acq_rel", "seq_cst", "consume"}) and (
            self.method in LOADS or self.method in RMW or self.method == "")


def split_lines(text: str) -> list[Line]:
    """Separates code from comments, line by line; string and character literals are blanked."""
    lines: list[Line] = []
    code, comment = [], []
    doc_only = False
    doc_text = ""
    i, n = 0, len(text)
    in_block = False
    line_has_code = False
    while i < n:
        c = text[i]
        if c == "\n":
            lines.append(Line("".join(code), " ".join(comment), doc_only and not line_has_code,
                              doc_text))
            code, comment, doc_only, line_has_code, doc_text = [], [], False, False, ""
            i += 1
            continue
        if in_block:
            end = text.find("*/", i)
            stop = text.find("\n", i)
            if end != -1 and (stop == -1 or end < stop):
                comment.append(text[i:end])
                code.append(" " * (end + 2 - i))
                i = end + 2
                in_block = False
            else:
                stop = n if stop == -1 else stop
                comment.append(text[i:stop])
                i = stop
            continue
        if text.startswith("//", i):
            stop = text.find("\n", i)
            stop = n if stop == -1 else stop
            body = text[i:stop]
            if body.startswith("///") and not body.startswith("////"):
                doc_only = True  # API documentation: not a memory-order comment
                doc_text = body[3:].strip()
            else:
                comment.append(body[2:].strip())
            i = stop
            continue
        if text.startswith("/*", i):
            in_block = True
            code.append("  ")
            i += 2
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            code.append(c + " " * (j - i - 1) + (c if j < n and text[j] == c else ""))
            i = j + 1 if j < n and text[j] == c else j
            line_has_code = True
            continue
        code.append(c)
        if not c.isspace():
            line_has_code = True
        i += 1
    lines.append(Line("".join(code), " ".join(comment), doc_only and not line_has_code, doc_text))
    return lines


def is_comment_only(line: Line) -> bool:
    return not line.code.strip() and bool(line.comment) and not line.doc


def comment_block_above(lines: list[Line], first: int) -> list[str]:
    """The `//` comment lines directly above line index `first` (nearest last)."""
    out = []
    k = first - 1
    while k >= 0 and is_comment_only(lines[k]):
        out.append(lines[k].comment)
        k -= 1
    return out[::-1]


def paragraph_comment(lines: list[Line], first: int) -> list[str]:
    """The comment block above the paragraph that line index `first` belongs to: walk up over
    code lines until a comment block (returned), a blank line, or a line that opens or closes a
    block (nothing)."""
    k = first - 1
    while k >= 0:
        line = lines[k]
        stripped = line.code.strip()
        if is_comment_only(line):
            return comment_block_above(lines, k + 1)
        if not stripped or line.doc or stripped.endswith("{") or stripped.startswith("}"):
            return []
        k -= 1
    return []


def find_operations(path: str, text: str) -> tuple[list[Operation], list[Line]]:
    lines = split_lines(text)
    flat = "\n".join(l.code for l in lines)
    starts = [0]
    for l in lines:
        starts.append(starts[-1] + len(l.code) + 1)

    def line_of(pos: int) -> int:
        lo, hi = 0, len(lines) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    ops: list[Operation] = []
    seen_statements: dict[tuple[int, int], Operation] = {}
    for m in ORDER.finditer(flat):
        pos = m.start()
        # The statement: back to the previous ; { or }, forward to the next ; or { that is not
        # inside parentheses opened after the order.
        b = pos
        while b > 0 and flat[b - 1] not in ";{}":
            b -= 1
        while b < pos and flat[b].isspace():
            b += 1
        depth, e = 0, pos
        while e < len(flat):
            ch = flat[e]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch in ";{" and depth <= 0:
                break
            e += 1
        first, last = line_of(b), line_of(min(e, len(flat) - 1))
        # The call this order belongs to: the nearest `x.method(` before it in the statement
        # whose parentheses are still open at the order.
        method, obj = "", ""
        for c in CALL.finditer(flat, b, pos):
            inner = flat[c.end():pos]
            if inner.count("(") >= inner.count(")"):
                method, obj = c.group(2), c.group(1)
        key = (first, last)
        statement = " ".join(flat[b:e + 1].split())
        if key in seen_statements and seen_statements[key].method == method and \
                seen_statements[key].obj == obj:
            seen_statements[key].orders.add(m.group(1))  # a CAS's second order, say
            continue
        own = [lines[k].comment for k in range(first, last + 1) if lines[k].comment]
        above = comment_block_above(lines, first)
        comment = " ".join(above + own)
        reason = " ".join(paragraph_comment(lines, first) + above + own)
        labels = [t for c in above + own for t in TAG.findall(LEADING.match(c).group(0))]
        op = Operation(path, line_of(pos) + 1, {m.group(1)}, method, obj, statement, comment,
                       reason, TAG.findall(comment), labels)
        seen_statements[key] = op
        ops.append(op)
    return ops, lines


def table_tags(design: str) -> tuple[list[list[str]], str]:
    """The tags of each row of the Memory orderings table, and an error if there is none."""
    m = re.search(r"^## Memory orderings\s*$(.*?)(?=^## |\Z)", design, re.M | re.S)
    if not m:
        return [], "docs/design.md has no '## Memory orderings' section"
    rows = []
    for line in m.group(1).splitlines():
        if not line.startswith("|") or re.match(r"^\|[\s|:-]+\|?\s*$", line):
            continue
        cells = line.strip().strip("|").split("|")
        if cells and cells[0].strip().lower() == "tag":
            continue  # the header
        rows.append(TAG.findall(cells[0]))
    if not rows:
        return [], "docs/design.md's Memory orderings section has no table"
    return rows, ""


def short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check(files: dict[str, str], design: str) -> tuple[list[tuple[str, int, str]], list[str]]:
    """Returns the findings (path, line, message) and the warnings."""
    findings: list[tuple[str, int, str]] = []
    warnings: list[str] = []
    all_ops: list[Operation] = []
    used_anywhere: dict[str, set[str]] = {}  # tag -> files it appears in, on operations or not
    for path, text in sorted(files.items()):
        ops, lines = find_operations(path, text)
        all_ops += ops
        for number, line in enumerate(lines, 1):
            for t in TAG.findall(line.comment + " " + line.doc_text):
                used_anywhere.setdefault(t, set()).add(path)
            for like in re.findall(r"\[[A-Z]{1,2}[0-9]+(?:-[a-z]+)?\]-like",
                                   line.comment + " " + line.doc_text):
                findings.append((path, number, f"{like} is not a tag: give the operation its own"))
            if re.search(r"\batomic_(thread|signal)_fence\b", line.code):
                findings.append((path, number, "a standalone fence (TSan does not model them): "
                                 "put the order on the operation"))
        for op in ops:
            where = f"`{short(op.text)}`"
            if op.orders & {"acquire", "release", "acq_rel", "consume"} and not op.tags:
                order = "/".join(sorted(op.orders & {"acquire", "release", "acq_rel", "consume"}))
                findings.append((path, op.line, f"{order} without a tag: {where}"))
            if "relaxed" in op.orders and not op.reason.strip():
                findings.append((path, op.line, f"relaxed without a comment saying why: {where}"))

    by_tag: dict[str, list[Operation]] = {}
    for op in all_ops:
        for t in dict.fromkeys(op.tags):
            by_tag.setdefault(t, []).append(op)

    for tag, ops in sorted(by_tag.items()):
        first = min(ops, key=lambda o: (o.path, o.line))
        if len(ops) == 1:
            op = ops[0]
            partner = PAIRS_WITH.findall(op.comment)
            if not (op.method in RMW and partner and op.acquires() and op.releases()):
                findings.append((op.path, op.line, f"[{tag}] is on one operation only: tag the "
                                 "other side of its pair too (or, for one acq_rel RMW, name its "
                                 "partner: \"pairs with [X]\")"))
        elif not any(o.releases() for o in ops) or not any(o.acquires() for o in ops):
            side = "acquiring" if not any(o.acquires() for o in ops) else "releasing"
            findings.append((first.path, first.line, f"[{tag}] has no {side} operation: tag "
                             "both sides of its pair"))
        objects = sorted({o.obj for o in ops
                          if o.obj and tag in o.labels and o.orders - {"seq_cst", "relaxed"}})
        if len(objects) > 1:
            findings.append((first.path, first.line, f"[{tag}] is on operations on different "
                             f"atomics ({', '.join(objects)}): one tag per pair"))
    for tag, paths in sorted(used_anywhere.items()):
        if len(paths) > 1:
            warnings.append(f"[{tag}] appears in {len(paths)} files ({', '.join(sorted(paths))}): "
                            "one meaning? (fine for a pair whose sides live in two components)")

    rows, error = table_tags(design)
    if error:
        findings.append(("docs/design.md", 0, error))
    else:
        in_table: dict[str, int] = {}
        for row in rows:
            for t in dict.fromkeys(row):
                in_table[t] = in_table.get(t, 0) + 1
        for tag, count in sorted(in_table.items()):
            if count > 1:
                findings.append(("docs/design.md", 0, f"[{tag}] has {count} rows in the table"))
            if tag not in by_tag:
                findings.append(("docs/design.md", 0, f"[{tag}] has a row in the table but is "
                                 "on no operation in include/"))
        for tag, paths in sorted(used_anywhere.items()):
            if tag not in in_table:
                for path in sorted(paths):
                    findings.append((path, 0, f"[{tag}] has no row in docs/design.md's table"))
    return findings, warnings


def key(finding: tuple[str, int, str]) -> str:
    return f"{finding[0]}: {finding[2]}"


def run(root: Path, allow_path: Path | None, keys_only: bool = False,
        verbose: bool = False) -> int:
    files = {str(p.relative_to(root)): p.read_text()
             for p in sorted((root / "include").rglob("*.hpp"))}
    design_path = root / "docs" / "design.md"
    design = design_path.read_text()
    findings, warnings = check(files, design)
    if keys_only:
        for f in sorted(findings, key=lambda f: (f[0], f[1], f[2])):
            print(key(f))
        return 0
    allowed: list[str] = []
    if allow_path is not None and allow_path.exists():
        allowed = [l.strip() for l in allow_path.read_text().splitlines()
                   if l.strip() and not l.startswith("#")]
    remaining = list(allowed)
    failed = 0
    for f in sorted(findings, key=lambda f: (f[0], f[1], f[2])):
        k = key(f)
        if k in remaining:
            remaining.remove(k)
            if verbose:
                print(f"allowed: {f[0]}:{f[1]}: {f[2]}")
        else:
            print(f"{f[0]}:{f[1]}: {f[2]}")
            failed += 1
    for w in warnings:
        print(f"warning: {w}")
    for k in remaining:
        print(f"{allow_path}: no longer fails, remove it: {k}")
        failed += 1
    ops = sum(len(find_operations(p, t)[0]) for p, t in files.items())
    print(f"check-memory-orders: {len(files)} headers, {ops} operations with an explicit order, "
          f"{len(findings)} findings ({len(findings) - failed + len(remaining)} allowed by "
          f"{allow_path.name if allow_path else 'nothing'}; -v lists them), {failed} failing")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------
# Self-test: snippets that must pass, and snippets that must fail with a given message.

TABLE = """## Memory orderings

| tag | what it publishes | where |
|---|---|---|
| `[Q1]` → `[Q2]` | an element | push / pop |
| `[C1]` | a count | done |
"""

GOOD = """
struct q {
    void push() {
        v = 1;
        seq.store(1, std::memory_order_release);  // [Q1] publishes v; pairs with [Q2]
    }
    int pop() {
        // [Q2] sees v written before [Q1]
        while (seq.load(std::memory_order_acquire) == 0) {
        }
        // relaxed: statistics only
        pops.fetch_add(1, std::memory_order_relaxed);
        hits.fetch_add(1, std::memory_order_relaxed);
        done.fetch_add(1, std::memory_order_acq_rel);  // [C1] pairs with [C1] in other pops
        return v;
    }
    /// API documentation.
    std::atomic<int> seq{0};
};
"""

SELF_TESTS: list[tuple[str, dict[str, str], str, list[str]]] = [
    ("well-formed pairs, a relaxed paragraph, an acq_rel RMW naming itself",
     {"include/a.hpp": GOOD}, TABLE, []),
    ("acquire without a tag",
     {"include/a.hpp": GOOD.replace("// [Q2] sees v written before [Q1]", "// waits")}, TABLE,
     ["acquire without a tag", "[Q1] is on one operation only", "[Q2] is on one operation only"]),
    ("relaxed without a reason",
     {"include/a.hpp": GOOD.replace("// relaxed: statistics only\n", "")}, TABLE,
     ["relaxed without a comment saying why: `pops.fetch_add", "relaxed without a comment saying "
      "why: `hits.fetch_add"]),
    ("a tag on one side only",
     {"include/a.hpp": GOOD.replace("// [Q2] sees v written before [Q1]", "// [Q2] sees v")},
     TABLE, ["[Q1] is on one operation only"]),
    ("a tag on two stores",
     {"include/a.hpp": GOOD.replace("while (seq.load(std::memory_order_acquire) == 0)",
                                    "while (seq.exchange(0, std::memory_order_release) == 0)")},
     TABLE, ["[Q1] has no acquiring operation", "[Q2] has no acquiring operation"]),
    ("one RMW that names no partner",
     {"include/a.hpp": GOOD.replace("[C1] pairs with [C1] in other pops", "[C1] counts")}, TABLE,
     ["[C1] is on one operation only"]),
    ("one tag for two pairs",
     {"include/a.hpp": GOOD.replace("std::atomic<int> seq{0};", """std::atomic<int> seq{0};
    void signal() { flag.store(true, std::memory_order_release); }  // [Q1] wakes the waiter
    bool seen() { return flag.load(std::memory_order_acquire); }  // [Q2] after [Q1]""")},
     TABLE, ["[Q1] is on operations on different atomics (flag, seq)",
             "[Q2] is on operations on different atomics (flag, seq)"]),
    ("a tag missing from the table, and a row no code uses",
     {"include/a.hpp": GOOD.replace("[C1]", "[C2]")}, TABLE,
     ["[C2] has no row in docs/design.md's table", "[C1] has a row in the table but is on no "
      "operation"]),
    ("a tag with two rows", {"include/a.hpp": GOOD}, TABLE + "| `[C1]` again | x | y |\n",
     ["[C1] has 2 rows in the table"]),
    ("'[Q1]-like' and a fence",
     {"include/a.hpp": GOOD.replace("// relaxed: statistics only",
                                    "// relaxed: [Q1]-like\n        "
                                    "std::atomic_thread_fence(std::memory_order_seq_cst);")},
     TABLE, ["[Q1]-like is not a tag", "a standalone fence"]),
    ("a CAS with two orders is one operation; its tag covers both",
     {"include/a.hpp": GOOD.replace(
         "pops.fetch_add(1, std::memory_order_relaxed);",
         "int e = 0;\n        // [Q2] takes the slot after [Q1]\n"
         "        seq.compare_exchange_strong(e, 1, std::memory_order_acquire,\n"
         "                                    std::memory_order_relaxed);")}, TABLE, []),
    ("the same tag in two files is a warning, not a failure",
     {"include/a.hpp": GOOD.replace("v = 1;", "v = 1;  // see [C1] in b.hpp"),
      "include/b.hpp": "// mentions [C1]\n"}, TABLE, []),
]


def self_test() -> int:
    failures = 0
    for name, files, design, expected in SELF_TESTS:
        findings, _ = check(files, design)
        messages = [f[2] for f in findings]
        missing = [e for e in expected if not any(e in m for m in messages)]
        extra = [m for m in messages if not any(e in m for e in expected)]
        if missing or extra:
            failures += 1
            print(f"self-test FAILED: {name}")
            for e in missing:
                print(f"  expected a finding containing: {e}")
            for m in extra:
                print(f"  unexpected finding: {m}")
        else:
            print(f"self-test ok: {name}")
    # The same-file warning case must warn.
    _, warnings = check(SELF_TESTS[-1][1], TABLE)
    if not any("[C1] appears in 2 files" in w for w in warnings):
        failures += 1
        print("self-test FAILED: a tag in two files gives no warning")
    print(f"check-memory-orders: self-test {'FAILED' if failures else 'passed'} "
          f"({len(SELF_TESTS) + 1} cases)")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    ap.add_argument("--allow", type=Path, default=ALLOW, help="the allow-list of known failures")
    ap.add_argument("--no-allow", action="store_true", help="report every finding as failing")
    ap.add_argument("--self-test", action="store_true", help="run the fixtures and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the allowed findings too")
    ap.add_argument("--keys", action="store_true",
                    help="print every finding in the allow-list's format, and exit 0")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    return run(args.root.resolve(), None if args.no_allow else args.allow, args.keys,
               args.verbose)


if __name__ == "__main__":
    sys.exit(main())
