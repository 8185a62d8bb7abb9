#!/usr/bin/env python3
"""Module cycles inside each crate: top-level modules that import each other
in a circle through `crate::NAME` paths (or `super::` from a nested file of
another top-level module). Prints each strongly connected component of more
than one module and exits 1 if there is any; prints "no module cycles" and
exits 0 otherwise.

    python3 deploy/dev/module-cycles.py [CRATES_DIR]
"""
import os
import re
import sys


def top_module(src, path):
    rel = os.path.relpath(path, src).split(os.sep)[0]
    return rel[:-3] if rel.endswith('.rs') else rel


def crate_graph(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            path = os.path.join(root, f)
            top = top_module(src, path)
            if top in ('lib', 'main'):
                continue
            text = open(path, errors='replace').read()
            mods.setdefault(top, set()).update(re.findall(r'\bcrate::(\w+)', text))
    return {m: {d for d in ds if d in mods and d != m} for m, ds in mods.items()}


def cycles(graph):
    sys.setrecursionlimit(10000)
    index, low, stack, on, counter, out = {}, {}, [], set(), [0], []

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    crates = sys.argv[1] if len(sys.argv) > 1 else 'crates'
    found = []
    for crate in sorted(os.listdir(crates)):
        src = os.path.join(crates, crate, 'src')
        if os.path.isdir(src):
            found += ['%s: %s' % (crate, ' <-> '.join(c)) for c in cycles(crate_graph(src))]
    if found:
        print('module cycles:')
        print('\n'.join('  ' + f for f in found))
        return 1
    print('no module cycles')
    return 0


if __name__ == '__main__':
    sys.exit(main())
