"""The dependency rules of docs/architecture.md, checked on the source with ``ast``.

- only proxy/record/ imports mitmproxy (the recorder and the forward-mode front);
- only proxy/store/ imports sqlite3 or sqlite_utils;
- only proxy/uvicorn_server.py imports uvicorn, and only it and proxy/net.py import socket;
  network clients (httpx, websockets) only in the relay (proxy/replay/forward.py) and the test tooling;
- runtime code never imports proxy.testing; the simulator does not import proxy.replay;
- replay, inspect, serve, the CLI and the pytest plugin load without mitmproxy: nothing they
  import at module level reaches proxy.record's mitmproxy modules;
- no import cycle among proxy modules (function-level imports included), and the only
  function-level imports of proxy modules are of the optional recorder (proxy.record.runner),
  in proxy/__init__.py of the public API (proxy.api), so that ``import proxy`` stays light,
  and in proxy/cli.py of the server (proxy.serve, proxy.uvicorn_server) by the commands that
  serve, so that ``proxy inspect`` and the other file commands start without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PKG = ROOT / "proxy"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` / try at module level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            if len(subs) < len(node.names):  # names defined in the module itself
                out.append((target, id(node) in top_level))
            out += [(m, id(node) in top_level) for m in subs]  # `from pkg import submodule`
    return out


def _third_party(name: str) -> set[str]:
    return {m.split(".")[0] for m, _ in _imports(name) if not m.startswith("proxy")}


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _who_imports(top: str) -> set[str]:
    return {m for m in MODULES if top in _third_party(m)}


def test_only_record_imports_mitmproxy():
    assert {m for m in _who_imports("mitmproxy") if not _is_under(m, "proxy.record")} == set()


def test_only_store_touches_sqlite():
    users = _who_imports("sqlite3") | _who_imports("sqlite_utils")
    assert {m for m in users if not _is_under(m, "proxy.store")} == set()


def test_only_the_server_adapter_touches_sockets_and_uvicorn():
    assert _who_imports("uvicorn") == {"proxy.uvicorn_server"}
    assert _who_imports("socket") <= {"proxy.net", "proxy.uvicorn_server"}
    clients = _who_imports("httpx") | _who_imports("websockets")
    assert {m for m in clients if not _is_under(m, "proxy.testing")} == {"proxy.replay.forward"}


def test_runtime_code_does_not_import_test_tooling():
    for name in MODULES:
        if _is_under(name, "proxy.testing"):
            continue
        assert not [m for m, _ in _imports(name) if _is_under(m, "proxy.testing")], name
    for name in MODULES:
        if _is_under(name, "proxy.testing.simulator"):
            assert not [m for m, _ in _imports(name) if _is_under(m, "proxy.replay")], name


def _module_level_closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        todo += [m for m, top in _imports(name) if top and m.startswith("proxy")]
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        todo += [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]
    return seen


def test_replay_inspect_and_plugin_load_without_mitmproxy():
    for start in ("proxy.replay.app", "proxy.inspect", "proxy.serve", "proxy.cli", "proxy.pytest_plugin", "proxy.api"):
        closure = _module_level_closure(start)
        heavy = {m for m in closure if any("mitmproxy" == t for t in _third_party(m))}
        assert heavy == set(), f"{start} imports mitmproxy through {sorted(heavy)}"


def test_function_level_imports_are_only_the_optional_recorder():
    lazy = {(name, m) for name in MODULES for m, top in _imports(name) if not top and m.startswith("proxy")}
    server = {"proxy.serve", "proxy.uvicorn_server"}
    assert {m for _, m in lazy} - {"proxy.record.runner"} <= {"proxy.api"} | server, sorted(lazy)
    assert {name for name, m in lazy if m == "proxy.api"} <= {"proxy"}, sorted(lazy)
    assert {name for name, m in lazy if m in server} <= {"proxy.cli"}, sorted(lazy)


def _cycles() -> list[list[str]]:
    graph = {n: sorted({m for m, _ in _imports(n) if m in MODULES and m != n}) for n in MODULES}
    cycles, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = "open"
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n)
    return cycles


def test_no_import_cycles():
    assert _cycles() == []


def test_the_scanner_sees_imports(tmp_path):
    # The rules above would pass vacuously if the scan found nothing.
    assert ("uvicorn", True) in _imports("proxy.uvicorn_server")
    assert ("proxy.replay.websocket", True) in _imports("proxy.replay.app")
    assert ("proxy.record.runner", False) in _imports("proxy.serve")
    assert "mitmproxy" in _third_party("proxy.record.addon")
    assert "mitmproxy" in _third_party("proxy.record.front")
    assert len(MODULES) > 30


def test_the_closure_includes_the_packages_python_runs_first():
    # `import proxy.replay.app` executes proxy/__init__.py and proxy/replay/__init__.py:
    # a mitmproxy import there must count against replay too.
    closure = _module_level_closure("proxy.replay.app")
    assert {"proxy", "proxy.replay"} <= closure
    assert "proxy.inspect" in _module_level_closure("proxy.inspect.view")
