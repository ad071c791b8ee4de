"""The house's rules, read from the source: imports point down the pipeline, no cycles, small modules.

``python tests/test_layers.py`` prints the figures these tests bound (largest modules, longest functions,
imports of our own modules made inside functions, cycles).
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "demoe"

# Top to bottom. A unit (a sub-package or a top-level module of demoe/) may import units of lower
# layers only; units of one layer are siblings and do not import each other.
LAYERS = [
    ["__main__"],
    ["cli"],
    ["perf"],
    ["jobs", "finetune", "report"],
    ["tracking"],
    ["runner"],
    ["metrics", "data"],
    ["registry"],
    ["net"],
    ["config", "runtime", "records"],
    ["vocab", "fileio", "paths", "errors", "progress", "__init__"],
]
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def sources() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.Module, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported demoe module, line, made inside a function) for every import of ``tree``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                # "from demoe.x import y" imports the module demoe.x.y when there is one
                targets = [
                    f"{child.module}.{a.name}" for a in child.names if f"{child.module}.{a.name}" in modules
                ]
                targets = targets or [child.module]
            for target in targets:
                if target.split(".")[0] == "demoe":
                    found.append((target, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def import_graph(parsed) -> dict[str, set[str]]:
    modules = set(parsed)
    graph = defaultdict(set)
    for name, (_, tree) in parsed.items():
        for target, _, _ in imports(tree, modules):
            if target != name and target in modules:
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return cycles


def upward_imports(parsed) -> list[str]:
    problems = []
    modules = set(parsed)
    for name, (path, tree) in parsed.items():
        here = unit_of(name)
        for target, line, _ in imports(tree, modules):
            there = unit_of(target)
            if there == here:
                continue
            if LAYER_OF[there] <= LAYER_OF[here]:
                relation = "a sibling" if LAYER_OF[there] == LAYER_OF[here] else "a higher layer"
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {name} imports {target} ({relation})"
                )
    return problems


def function_lengths(parsed) -> list[tuple[int, str]]:
    lengths = []
    for name, (_, tree) in parsed.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # from ``def`` to the last line: a command's option decorators are declarations, not code
                lengths.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(lengths, reverse=True)


def module_lengths(parsed) -> list[tuple[int, str]]:
    return sorted(
        ((len(path.read_text().splitlines()), name) for name, (path, _) in parsed.items()), reverse=True
    )


def test_every_unit_has_a_layer():
    units = {unit_of(name) for name in sources()}
    assert units - set(LAYER_OF) == set(), "add the new folder or module of demoe/ to LAYERS"


def test_no_import_cycles():
    assert find_cycles(import_graph(sources())) == []


def test_imports_point_down_the_pipeline():
    assert upward_imports(sources()) == []


def test_modules_fit_a_budget():
    too_long = [(n, name) for n, name in module_lengths(sources()) if n > MAX_MODULE_LINES]
    assert too_long == []


def test_functions_fit_on_a_screen():
    too_long = [(n, name) for n, name in function_lengths(sources()) if n > MAX_FUNCTION_LINES]
    assert too_long == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The rules above would catch a violation: a planted one in a copy of the real graph is found."""
    parsed = sources()
    planted = ast.parse("from demoe.cli import main\n")
    graph = import_graph(parsed)
    graph["demoe.vocab"].add("demoe.records")
    graph["demoe.records"].add("demoe.vocab")
    assert ["demoe.records", "demoe.vocab"] in find_cycles(graph)
    parsed["demoe.runner.planted"] = (PACKAGE / "runner" / "planted.py", planted)
    assert upward_imports(parsed) == [
        "demoe/runner/planted.py:1: demoe.runner.planted imports demoe.cli (a higher layer)"
    ]


def main() -> None:
    parsed = sources()
    modules = set(parsed)
    inner = [
        (name, target, line)
        for name, (_, tree) in parsed.items()
        for target, line, in_function in imports(tree, modules)
        if in_function
    ]
    print("largest modules (lines):")
    for n, name in module_lengths(parsed)[:5]:
        print(f"  {n:5d}  {name}")
    print("longest functions (lines):")
    for n, name in function_lengths(parsed)[:5]:
        print(f"  {n:5d}  {name}")
    print(f"imports of demoe modules inside functions: {len(inner)}")
    for name, target, line in inner:
        print(f"  {name}:{line} -> {target}")
    cycles = find_cycles(import_graph(parsed))
    print(f"import cycles: {len(cycles)}", *(" -> ".join(c) for c in cycles), sep="\n  ")
    upward = upward_imports(parsed)
    print(f"upward or sibling imports: {len(upward)}", *upward, sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
