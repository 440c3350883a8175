"""The shape of the installed package, read from its source: no import cycles, a library
that never reaches for the command line, and a library that never prints or exits.

The library's layers, lowest first, each a package of rpctl.controller:

    contract  errors, refs, abi: what every layer agrees on
    tables    pure tables and decisions (no system call, no file, no clock)
    kernel    system calls, bpffs, maps, the loader, sock_diag, sockets, processes
    store     a group's pinned state and every write to it
    read      the read models (this host's maps, a Prometheus server)
    ops       what runs over time: adopt, reconcile, serve, the launcher, restarts

A module imports from its own layer and the layers below it, never above, and
never the package rpctl.controller itself nor the store's facade (store/group.py):
those are the public API, for callers; inside the library one imports the module
that holds the thing.
The command line (rpctl.cli) stands above them all; it reads the read model, not
the ABI or raw maps, and no command module imports another.  No module uses a
private name (`_x`) of another module, and no test or benchmark one of the library.
No module of the library or the command line is over 600 lines, and the program's
main file (bpf/steer.bpf.c) is at most 450.

Every import counts, those inside functions included: importing lazily keeps a command's
start-up short, but a lazy cycle is still a cycle to a reader.  Run as a script,
`python -m tests.unit.test_import_graph` prints the layers of the graph.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("rpctl.bpf", "rpctl.controller", "rpctl.cli")
LIBRARY = "rpctl.controller"
CLI = "rpctl.cli"
LAYERS = ("contract", "tables", "kernel", "store", "read", "ops")
# What the command line takes from the read model instead.
BELOW_THE_CLI = ("rpctl.controller.contract.abi", "rpctl.controller.kernel.bpfsys", "rpctl.controller.kernel.maps")
# The public faces of the library: for callers (the CLI, tests, benchmarks), not for the library itself.
FACADES = (LIBRARY, f"{LIBRARY}.store.group")
MAX_MODULE_LINES = 600
MAX_PROGRAM_LINES = 450


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


def layer_of(module: str) -> str:
    """The layer of a module of the library ("" for the package itself)."""
    parts = module.split(".")
    return parts[2] if module.startswith(LIBRARY + ".") and len(parts) > 2 else ""


def against_the_rule(graph: dict[str, set[str]]) -> list[str]:
    """Every import the layering forbids, as "a -> b (why)"."""
    bad = []
    for a, targets in sorted(graph.items()):
        if a.startswith(LIBRARY + ".") and layer_of(a) not in LAYERS:
            bad.append(f"{a} (a library module outside the layers {', '.join(LAYERS)})")
            continue
        for b in sorted(targets):
            if a.startswith(LIBRARY + "."):
                if b in FACADES and a != f"{LIBRARY}.store.group":
                    bad.append(f"{a} -> {b} (the public API is for callers, not the library)")
                elif b.startswith(LIBRARY + ".") and LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a)):
                    bad.append(f"{a} -> {b} ({layer_of(a)} is below {layer_of(b)})")
            elif a.startswith(CLI):
                if b in BELOW_THE_CLI:
                    bad.append(f"{a} -> {b} (the command line reads the read model)")
                if a.endswith("_cmd") and b.endswith("_cmd"):
                    bad.append(f"{a} -> {b} (a command module imports no other)")
    return bad


def private_names_used(name: str, path: Path, known: set[str]) -> list[str]:
    """`from m import _x`, `m._x` and `setattr(m, "_x", ...)` (getattr, monkeypatch.setattr...)
    where m is another rpctl module."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}  # local name -> the rpctl module it is bound to
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            targets = _imported(name, path, node, known)
            for alias in node.names:
                bound = next((t for t in targets if t.endswith("." + alias.name)), None)
                if bound:
                    aliases[alias.asname or alias.name] = bound
                elif alias.name.startswith("_") and not alias.name.startswith("__") and targets:
                    bad.append(f"{name}: from {targets[0]} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and _is_private(node.attr)):
            bad.append(f"{name}:{node.lineno} {aliases[node.value.id]}.{node.attr}")
        elif isinstance(node, ast.Call) and _is_by_name(node.func) and len(node.args) >= 2:
            module, attr = node.args[0], node.args[1]
            if (isinstance(module, ast.Name) and module.id in aliases and isinstance(attr, ast.Constant)
                    and isinstance(attr.value, str) and _is_private(attr.value)):
                bad.append(f"{name}:{node.lineno} {aliases[module.id]}.{attr.value}")
    return bad


def _is_private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def _is_by_name(func: ast.expr) -> bool:
    """setattr(), getattr(), delattr(), hasattr(), or a method so named (monkeypatch.setattr)."""
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return called in ("setattr", "getattr", "delattr", "hasattr")


def private_names_used_by_tests_and_benchmarks() -> list[str]:
    """private_names_used() over tests/ and bench/, as "tests.unit.test_x: rpctl.m._y" (no line)."""
    known = set(modules())
    found = set()
    for top in ("tests", "bench"):
        for path in sorted((REPO / top).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found.update(re.sub(r"^([\w.]+):\d* ?", r"\1: ", use) for use in private_names_used(name, path, known))
    return sorted(found)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph folded to packages: the library's layers, rpctl.cli, rpctl.bpf."""
    def package(m: str) -> str:
        if m.startswith(LIBRARY + "."):
            return f"{LIBRARY}.{layer_of(m)}"
        return m if m in PACKAGES else ".".join(m.split(".")[:2])
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(package(a), set()).update(package(b) for b in targets if package(b) != package(a))
    return out


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
    # cli/main.py imports its table of commands at the top, members_cmd imports group lazily:
    assert "rpctl.cli.commands" in graph["rpctl.cli.main"]
    assert "rpctl.controller.store.group" in graph["rpctl.cli.members_cmd"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_package_cycles():
    found = cycles(package_graph(import_graph()))
    assert not found, "package cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_follow_the_layers():
    bad = against_the_rule(import_graph())
    assert not bad, "imports against the layering: " + "; ".join(bad)


def test_no_module_uses_a_private_name_of_another():
    mods = modules()
    bad = [use for name, path in mods.items() for use in private_names_used(name, path, set(mods))]
    assert not bad, "private names used across modules: " + "; ".join(bad)


def too_long(paths: dict[str, Path], limit: int) -> list[str]:
    """The files of `paths` over `limit` lines, as "name (N lines)"."""
    counts = {name: len(path.read_text().splitlines()) for name, path in paths.items()}
    return [f"{name} ({n} lines)" for name, n in sorted(counts.items()) if n > limit]


def test_no_module_is_over_600_lines_and_the_program_over_450():
    bad = too_long({n: p for n, p in modules().items() if n.startswith((LIBRARY, CLI))}, MAX_MODULE_LINES)
    assert not bad, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {bad}"
    program = Path(importlib.util.find_spec("rpctl.bpf").submodule_search_locations[0]) / "steer.bpf.c"
    bad = too_long({"bpf/steer.bpf.c": program}, MAX_PROGRAM_LINES)
    assert not bad, f"the program's main file is over {MAX_PROGRAM_LINES} lines (steps go in headers): {bad}"


# Tests and benchmarks reach the library by its public names too.
def test_no_test_or_benchmark_uses_a_private_name_of_the_library():
    bad = private_names_used_by_tests_and_benchmarks()
    assert not bad, "private names of the library used by tests or benchmarks: " + "; ".join(bad)


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
    readme = (REPO / "README.md").read_text()
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
    lib = LIBRARY
    made_up = {
        f"{lib}.tables.t": {f"{lib}.contract.errors"},             # down: allowed
        f"{lib}.kernel.k": {f"{lib}.store.state"},                 # up: refused
        f"{lib}.read.v": {lib},                                    # the facade: refused
        f"{lib}.ops.o": {f"{lib}.store.group", f"{lib}.store.steering"},  # the store's facade: refused
        f"{lib}.loose": set(),                                     # outside the layers: refused
        f"{CLI}.a_cmd": {f"{CLI}.b_cmd", f"{lib}.contract.abi"},   # command -> command, cli -> abi: refused
    }
    assert [b.split(" (")[0] for b in against_the_rule(made_up)] == [
        f"{CLI}.a_cmd -> {CLI}.b_cmd", f"{CLI}.a_cmd -> {lib}.contract.abi", f"{lib}.kernel.k -> {lib}.store.state",
        f"{lib}.loose", f"{lib}.ops.o -> {lib}.store.group", f"{lib}.read.v -> {lib}"]
    short, long = tmp_path / "short.py", tmp_path / "long.py"
    short.write_text("x = 1\n" * 600)
    long.write_text("x = 1\n" * 601)
    assert too_long({"s": short, "l": long}, 600) == ["l (601 lines)"]
    assert cycles(package_graph({f"{lib}.store.s": {f"{lib}.read.v"}, f"{lib}.read.v": {f"{lib}.store.t"},
                                 f"{lib}.store.t": set()})) == [[f"{lib}.read", f"{lib}.store"]]
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "m.py").write_text("from rpctl.x import _hidden, shown\nfrom rpctl import x as y\ny._inner()\n"
                              "monkeypatch.setattr(y, '_patched', 1)\nsetattr(y, 'shown', 2)\ngetattr(y, '__doc__')\n")
    known = {"rpctl.x"}
    assert sorted(private_names_used("rpctl.p.m", pkg / "m.py", known)) == [
        "rpctl.p.m: from rpctl.x import _hidden", "rpctl.p.m:3 rpctl.x._inner", "rpctl.p.m:4 rpctl.x._patched"]


if __name__ == "__main__":
    graph = import_graph()
    print("packages, lowest first (each imports only those on its left):")
    for depth, layer in enumerate(layers(package_graph(graph))):
        print(f"  floor {depth}: {', '.join(m.removeprefix('rpctl.') for m in layer)}")
    print("modules:")
    for depth, layer in enumerate(layers(graph)):
        print(f"  floor {depth}: {', '.join(m.removeprefix('rpctl.') for m in layer)}")
