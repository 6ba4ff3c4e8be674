"""No import cycles anywhere in a package (`make lint`; import-linter has no cycle contract).

Reads the import graph with grimp, the library under import-linter (it follows lorarun/'s symbolic links, so
`lorarun.runner.*` is runner/), and reports every strongly connected group of modules: each is a cycle, or several
tangled together. Imports inside functions and under `if TYPE_CHECKING:` count: a lazy import only hides a cycle
from the interpreter, not from the reader, and a type-only one still ties two rooms together.

    python tools/check_cycles.py [PACKAGE ...]     # default: lorarun; exit 1 and one block per cycle when found
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping


def import_graph(package: str) -> dict[str, set[str]]:
    """module → the modules of the same package it imports directly."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every group of modules that import each other (directly or around a loop), each sorted, groups sorted.
    Tarjan's strongly connected components, iterative (a deep package must not hit the recursion limit); a module
    importing itself is a cycle too."""
    graph = {m: sorted(set(targets)) for m, targets in edges.items()}
    for targets in list(graph.values()):
        for t in targets:
            graph.setdefault(t, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    found.append(sorted(group))
    return sorted(found)


def describe(group: list[str], edges: Mapping[str, Iterable[str]]) -> str:
    members = set(group)
    lines = [f"import cycle among {len(group)} module(s):"]
    for module in group:
        for target in sorted(set(edges[module]) & members):
            lines.append(f"  {module} -> {target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    packages = (sys.argv[1:] if argv is None else argv) or ["lorarun"]
    problems = []
    for package in packages:
        edges = import_graph(package)
        problems += [describe(group, edges) for group in cycles(edges)]
    for text in problems:
        print(text)
    if problems:
        print(f"{len(problems)} import cycle(s): move the shared part to a module both can import, or pass a function")
        return 1
    print(f"no import cycles in {', '.join(packages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
