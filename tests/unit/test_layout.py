"""
The house plan, checked: no import cycles between gracesvc's modules or its
packages (lazy imports and C{TYPE_CHECKING} imports count), the drain core
imports no other room, only L{gracesvc._pins} imports the private modules
of Twisted, Klein and h2, no test module imports another, and every
C{test-case-name} header names test modules that exist.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

import gracesvc

PACKAGE = os.path.dirname(os.path.abspath(gracesvc.__file__))

#: Third-party packages whose private modules (a dotted part starting with
#: one underscore) only the pins may import.
PINNED = ("twisted", "klein", "h2", "hyperframe", "hpack", "wsproto")


def modules() -> dict[str, str]:
    """
    @return: every module of gracesvc, by dotted name, with its path.
    """
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
            dotted = relative.replace(os.sep, ".")
            if dotted.endswith(".__init__"):
                dotted = dotted[: -len(".__init__")]
            found[dotted] = path
    return found


@functools.cache
def parsed(path: str) -> ast.Module:
    """
    @return: the syntax tree of the module at C{path}, parsed once for all
        the tests here.
    """
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def imported(module: str, path: str) -> Iterator[tuple[str, int]]:
    """
    @return: every module C{module} imports, anywhere in its body (inside
        functions and C{if TYPE_CHECKING:} included), with the line.
    """
    tree = parsed(path)
    isPackage = path.endswith("__init__.py")
    base = module if isPackage else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{anchor}.{node.module}" if node.module else anchor
            else:
                source = node.module or ""
            yield source, node.lineno
            for alias in node.names:
                yield f"{source}.{alias.name}", node.lineno


@functools.cache
def graph() -> dict[str, dict[str, int]]:
    """
    @return: for each gracesvc module, the gracesvc modules it imports and
        the line of the first such import.
    """
    known = modules()
    edges: dict[str, dict[str, int]] = {m: {} for m in known}
    for module, path in known.items():
        for name, line in imported(module, path):
            target = name
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module and target.startswith("gracesvc"):
                edges[module].setdefault(target, line)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """
    @return: the strongly connected components of more than one node (or a
        node importing itself): each is a cycle or several.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        onStack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in onStack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                onStack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def room(module: str) -> str:
    """
    @return: the package (room) of C{module}: C{gracesvc._core} for
        C{gracesvc._core.drain}; a top-level module is its own room.
    """
    parts = module.split(".")
    return ".".join(parts[:2])


class ImportGraphTests(SynchronousTestCase):
    def test_noModuleCycles(self) -> None:
        """
        No gracesvc module imports, directly or through others, one that
        imports it back.
        """
        edges = {m: set(targets) for m, targets in graph().items()}
        self.assertEqual(cycles(edges), [])

    def test_noRoomCycles(self) -> None:
        """
        The packages (rooms) depend on each other in one direction only.
        """
        rooms: dict[str, set[str]] = {}
        for module, targets in graph().items():
            for target in targets:
                if room(target) != room(module) and room(target) != "gracesvc":
                    rooms.setdefault(room(module), set()).add(room(target))
        self.assertEqual(cycles(rooms), [])

    def test_coreStandsAlone(self) -> None:
        """
        The drain core imports nothing of gracesvc outside itself: it knows
        no protocol, no app and no Twisted internal.
        """
        outside = sorted(
            f"{module} imports {target} (line {line})"
            for module, targets in graph().items()
            if room(module) == "gracesvc._core"
            for target, line in targets.items()
            if room(target) != "gracesvc._core"
        )
        self.assertEqual(outside, [])

    def test_onlyThePinsImportPrivateModules(self) -> None:
        """
        Every private module of Twisted, Klein, h2 and wsproto that gracesvc
        imports is imported in L{gracesvc._pins}, where a test pins it.
        """
        leaks = []
        for module, path in modules().items():
            if module.startswith("gracesvc._pins"):
                continue
            for name, line in imported(module, path):
                parts = name.split(".")
                if parts[0] in PINNED and any(
                    p.startswith("_") and not p.startswith("__") for p in parts[1:]
                ):
                    leaks.append(f"{module}:{line} imports {name}")
        self.assertEqual(sorted(set(leaks)), [])

    def test_testModulesImportNoTestModule(self) -> None:
        """
        What the tests share is in C{tests/support}: no test module imports
        another.
        """
        tests = os.path.join(os.path.dirname(PACKAGE), "tests")
        found = []
        for directory, _, files in os.walk(tests):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, os.path.dirname(tests))[:-3]
                for target, line in imported(dotted.replace(os.sep, "."), path):
                    if target.split(".")[-1].startswith("test_") or target.startswith(
                        ("tests.unit.", "tests.e2e.")
                    ):
                        found.append(f"{dotted}:{line} imports {target}")
        self.assertEqual(sorted(set(found)), [])

    def test_testCaseNamesExist(self) -> None:
        """
        Every module's C{test-case-name} header (what C{trial} and editors
        run for it) names test modules that exist.
        """
        root = os.path.dirname(PACKAGE)
        missing = []
        for module, path in modules().items():
            with open(path, encoding="utf-8") as f:
                head = f.readline()
            match = re.search(r"test-case-name: *([\w.,]+)", head)
            for name in match.group(1).split(",") if match else []:
                if not os.path.exists(os.path.join(root, *name.split(".")) + ".py"):
                    missing.append(f"{module} names {name}")
        self.assertEqual(missing, [])

    def test_cyclesAreFound(self) -> None:
        """
        The cycle finder finds a cycle through several modules and a module
        importing itself, and nothing in a tree.
        """
        self.assertEqual(
            cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
            [["a", "b", "c"]],
        )
        self.assertEqual(cycles({"a": {"a"}}), [["a"]])
        self.assertEqual(cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}), [])
