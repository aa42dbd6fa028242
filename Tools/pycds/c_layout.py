"""The shape of pycds's C code: files, longest functions, calls between files.

Usage:  python Tools/pycds/c_layout.py [--check] [--max-lines N]
                                      [--max-function N]

For each of our C files (Python/cds_*.c) it prints the line count, and the
functions longer than the limit (a type switch like marshal's w_object is
allowed to be, by name in ALLOWED_LONG).  It then lists which of our files
call functions defined in which (by the names each file defines with
external linkage and the identifiers the others use), and looks for a cycle
in that graph.  With --check, it exits 1 when a file or function is over its
limit or the graph has a cycle (the test suite runs it so).

It reads the sources as text: a function is a top-level definition from its
name line to the closing brace in column 0.
"""

import argparse
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# type switches, as marshal.c's w_object()/r_object()
ALLOWED_LONG = {'write_object'}

DEF_RE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\(', re.M)
IDENT_RE = re.compile(r'\b(_PyCDS_[A-Za-z0-9_]+|PyInit__cds)\b')


def sources(root=ROOT):
    return sorted(glob.glob(os.path.join(root, 'Python', 'cds_*.c')))


def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', lambda m: '\n' * m.group().count('\n'), text,
                  flags=re.S)
    return re.sub(r'//[^\n]*', '', text)


def functions(text):
    """(name, first line, length in lines) of each top-level function."""
    lines = text.split('\n')
    result = []
    for m in DEF_RE.finditer(text):
        start = text.count('\n', 0, m.start())
        # the body ends at the first '}' in column 0 after the '{' line
        end = start
        while end < len(lines) and lines[end] != '{':
            if lines[end].rstrip().endswith(';'):
                break           # a declaration, not a definition
            end += 1
        if end >= len(lines) or lines[end] != '{':
            continue
        close = end
        while close < len(lines) and lines[close] != '}':
            close += 1
        result.append((m.group(1), start + 1, close - start + 1))
    return result


def defined_names(text):
    """Names this file defines with external linkage."""
    names = set()
    for name, line, _ in functions(text):
        prev = text.split('\n')[line - 2] if line >= 2 else ''
        if not prev.startswith('static'):
            names.add(name)
    for m in re.finditer(r'^(?:[A-Za-z_][\w ]*\*?\s*)(_PyCDS_\w+)\s*(?:=|;)',
                         text, re.M):
        if not m.group(0).startswith(('extern', 'static', 'typedef')):
            names.add(m.group(1))
    return names


def call_graph(files):
    texts = {os.path.basename(f): strip_comments(open(f).read()) for f in files}
    owner = {}
    for fname, text in texts.items():
        for name in defined_names(text):
            owner[name] = fname
    graph = {f: set() for f in texts}
    for fname, text in texts.items():
        for name in set(IDENT_RE.findall(text)):
            target = owner.get(name)
            if target and target != fname:
                graph[fname].add(target)
    return graph


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true')
    parser.add_argument('--max-lines', type=int, default=900)
    parser.add_argument('--max-function', type=int, default=120)
    parser.add_argument('--root', default=ROOT)
    args = parser.parse_args(argv)
    files = sources(args.root)
    if not files:
        print('c_layout: no Python/cds_*.c under', args.root, file=sys.stderr)
        return 1
    problems = []
    print('file                      lines  longest functions')
    for f in files:
        text = open(f).read()
        n = text.count('\n')
        funcs = sorted(functions(strip_comments(text)), key=lambda t: -t[2])
        top = ', '.join(f'{name} {length}' for name, _, length in funcs[:3])
        print(f'{os.path.basename(f):24} {n:6}  {top}')
        if n > args.max_lines:
            problems.append(f'{os.path.basename(f)}: {n} lines '
                            f'(limit {args.max_lines})')
        for name, line, length in funcs:
            if length > args.max_function and name not in ALLOWED_LONG:
                problems.append(f'{os.path.basename(f)}:{line}: {name}() is '
                                f'{length} lines (limit {args.max_function})')
    graph = call_graph(files)
    print()
    print('calls between files (caller -> files it calls):')
    for f in sorted(graph):
        print(f'  {f:22} -> {" ".join(sorted(graph[f])) or "-"}')
    cycle = find_cycle(graph)
    print()
    if cycle:
        problems.append('cycle: ' + ' -> '.join(cycle))
    else:
        print('no cycle')
    for p in problems:
        print('c_layout:', p)
    return 1 if (args.check and problems) else 0


if __name__ == '__main__':
    sys.exit(main())
