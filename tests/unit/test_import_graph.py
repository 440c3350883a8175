"""The shape of the installed package, read from its source: no import cycles, a library
that never reaches for the command line, and a library that never prints or exits.

Every import counts, those inside functions included: importing lazily keeps a command's
start-up short, but a lazy cycle is still a cycle to a reader.  Run as a script,
`python -m tests.unit.test_import_graph` prints the layers of the graph.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PACKAGES = ("rpctl.bpf", "rpctl.controller", "rpctl.cli")
LIBRARY = "rpctl.controller"
CLI = "rpctl.cli"


def modules() -> dict[str, Path]:
    """Every module of the installed packages: dotted name -> source file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
        for location in spec.submodule_search_locations:
            root = Path(location)
            for path in sorted(root.rglob("*.py")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join([package, *parts])] = path
    return found


def _imported(name: str, path: Path, node: ast.AST, known: set[str]) -> list[str]:
    """The rpctl modules one import statement names."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        # `from pkg import mod` names the module pkg.mod; `from mod import x` names mod.
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for target in targets:
        # `import rpctl.cli.demo.worker` also imports its packages; the deepest known one is the edge.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target.startswith("rpctl.") and target != name:
            out.append(target)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(_imported(name, path, node, known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Layer 0 imports no rpctl module; layer n imports only from layers below n."""
    depth: dict[str, int] = {}

    def level(v: str) -> int:
        if v not in depth:
            depth[v] = 0  # no cycles (checked first): this guard is never read back
            depth[v] = 1 + max((level(w) for w in graph[v]), default=-1)
        return depth[v]

    for v in graph:
        level(v)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for v, d in depth.items():
        out[d].append(v)
    return [sorted(layer) for layer in out]


def _calls_that_end_the_process_or_print(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("print", "exit", "quit"):
            bad.append(f"{path.name}:{node.lineno} {f.id}()")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if (f.value.id, f.attr) in (("sys", "exit"), ("os", "_exit")):
                bad.append(f"{path.name}:{node.lineno} {f.value.id}.{f.attr}()")
    return bad


def test_the_walk_sees_every_package_and_lazy_imports():
    graph = import_graph()
    assert set(PACKAGES) <= set(graph)
    assert len(graph) > 30
    # cli/main.py imports its command modules at the top, members_cmd imports group lazily:
    assert "rpctl.cli.members_cmd" in graph["rpctl.cli.main"]
    assert "rpctl.controller.group" in graph["rpctl.cli.members_cmd"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_library_never_imports_the_command_line():
    graph = import_graph()
    bad = [f"{a} -> {b}" for a, targets in graph.items() if a.startswith(LIBRARY) for b in targets
           if b.startswith(CLI)]
    assert not bad, bad


def test_shared_cli_pieces_import_no_command_module():
    graph = import_graph()
    for shared in ("rpctl.cli.common", "rpctl.cli.text", "rpctl.cli.json_docs", "rpctl.cli.render"):
        commands = sorted(b for b in graph[shared] if b.endswith("_cmd") or b == "rpctl.cli.main")
        assert not commands, f"{shared} imports {commands}"


def test_the_library_never_prints_or_exits():
    bad = [call for name, path in modules().items() if name.startswith(LIBRARY)
           for call in _calls_that_end_the_process_or_print(path)]
    assert not bad, "the library logs or returns data; the CLI words it and exits: " + ", ".join(bad)


def test_the_readme_layout_names_every_module():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    layout = readme.split("## Layout of the code", 1)[1].split("\n## ", 1)[0]
    missing = [f"{name} ({path.name})" for name, path in modules().items()
               if path.name not in ("__init__.py", "__main__.py") and path.name not in layout]
    assert not missing, f"README's Layout of the code does not name: {missing}"


def test_the_checks_would_catch_what_they_look_for(tmp_path):
    """A cycle, a print and an exit, made up here, are each found (the checks can fail)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "m.py"
    source.write_text("import os, sys\ndef f():\n    print('x')\n    sys.exit(1)\n    os._exit(2)\n")
    assert [c.split()[1] for c in _calls_that_end_the_process_or_print(source)] == ["print()", "sys.exit()",
                                                                                   "os._exit()"]
    assert layers({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == [["b"], ["a"], ["c"]]


if __name__ == "__main__":
    for depth, layer in enumerate(layers(import_graph())):
        print(f"layer {depth}: {', '.join(m.removeprefix('rpctl.') for m in layer)}")
