"""No import cycles in src/lai.

A cycle means two modules cannot be read (or loaded) one without the other, and it is
usually dodged with an import inside a function that hides the dependency from a reader.
This builds the module-level graph from the source with `ast`: imports at the top of a
module (and inside top-level `try`/`if`/`with` blocks and class bodies, which still run
on import) count; imports inside `if TYPE_CHECKING:` never run and do not. A second check
adds the imports deferred into functions: lai defers heavy third-party imports (torch,
transformers), never its own modules to get around a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.Module, name: str, is_package: bool, modules: set[str], deferred: bool) -> set[str]:
    """The lai modules `name` imports when it is loaded (with `deferred`: or when any of its
    functions runs)."""
    found: set[str] = set()

    def resolve(target: str) -> None:
        # The module itself, not its parent packages: a package's __init__ that imports its
        # own submodules (a registry) is the usual layout, not a cycle a reader trips on.
        if target in modules:
            found.add(target)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    resolve(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                for alias in node.names:  # `from lai.x import y`: lai.x.y if a module, else lai.x
                    resolve(f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem)
            elif isinstance(node, ast.If):
                if not is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With | ast.ClassDef) or (
                deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            ):
                visit(node.body)
            elif deferred and isinstance(node, ast.For | ast.AsyncFor | ast.While | ast.AsyncWith):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif deferred and isinstance(node, ast.Match):
                for case in node.cases:
                    visit(case.body)

    visit(tree.body)
    found.discard(name)
    return found


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    files = {module_name(path): path for path in (SRC / "lai").rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = imports_of(tree, name, path.name == "__init__.py", modules, deferred)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = import_graph()
    assert "lai.config" in graph["lai.pipeline"]
    assert "lai.errors" in graph["lai.config"]
    assert "lai.config" not in graph["lai.train.base"]  # only under TYPE_CHECKING
    assert "lai.targets.hf" in import_graph(deferred=True)["lai.train.sft"]  # inside run_training


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_lai() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycles_hidden_in_deferred_imports() -> None:
    cycle = find_cycle(import_graph(deferred=True))
    assert cycle is None, "import cycle through an import inside a function: " + " -> ".join(cycle or [])
