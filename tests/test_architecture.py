"""The package layers of docs/design.md, read from the imports with ``ast``.

Each package may import itself and the layers below it. Stages (recon, fx, render, refine,
comp) never import each other, except the contract modules that two stages share. No
import cycles between modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "splatfx"

_BASE = {"core"}
_IO = _BASE | {"io"}
_SHOT = _IO | {"shot"}
_STAGE = _SHOT | {"raster"}
_STAGES = {"recon", "fx", "render", "refine", "comp"}
_APP = _STAGE | _STAGES | {"viewer", "pipeline"}

#: What each top-level package (or module) may import, besides itself.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "raster": _BASE,
    "io": _BASE,
    "shot": _IO,
    "recon": _STAGE,
    "fx": _STAGE,
    "render": _STAGE,
    "refine": _STAGE,
    "comp": _STAGE,
    "viewer": _APP - {"pipeline"},
    "export": _APP - {"pipeline", "viewer"},  # the shot in other tools: reads every stage's outputs
    "pipeline": _APP - {"viewer"},
    "demo": _APP,
    "commands": _APP | {"demo", "commands", "export"},
    "cli": _BASE | {"commands"},
    "__init__": set(),
}

#: Contracts between stages: module -> the packages that may read it. Each holds data and its
#: reader/writer only, so a consumer does not pull in the producing stage.
CONTRACTS: dict[str, set[str]] = {
    "splatfx.fx.animation": {"render", "refine", "comp"},
    "splatfx.render.layers": {"refine", "comp"},
    "splatfx.render.cleanfill": {"refine", "comp"},  # the clean-plate fill both build the background with
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every splatfx module ``path`` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the submodule when one exists.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == "splatfx" or t.startswith("splatfx."))
    return found


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def test_every_package_has_a_layer() -> None:
    packages = {top_package(m) for m in all_modules()}
    assert packages <= set(ALLOWED), f"packages without a layer in ALLOWED: {sorted(packages - set(ALLOWED))}"


def test_no_module_imports_above_its_layer_or_another_stage() -> None:
    broken = []
    for module, targets in import_graph().items():
        own = top_package(module)
        for target in targets:
            theirs = top_package(target)
            if target == "splatfx" or theirs == own or theirs in ALLOWED[own]:
                continue
            if own in CONTRACTS.get(target, set()):
                continue
            broken.append(f"{module} -> {target}")
    assert not broken, "imports that break the layers:\n" + "\n".join(sorted(broken))


def test_no_import_cycles() -> None:
    graph = import_graph()
    # Tarjan's strongly connected components over the module graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):  # a package's __init__ importing a submodule is no cycle
            if nxt not in graph or nxt == node:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    # A package importing its own submodules in __init__ while they import the package's other
    # submodules is the normal package pattern; only cycles between leaf modules count.
    leaf_cycles = [c for c in cycles if len([m for m in c if not (PACKAGE.parent / m.replace(".", "/")).is_dir()]) > 1]
    assert not leaf_cycles, f"import cycles: {leaf_cycles}"


@pytest.mark.parametrize("module", ["splatfx.render", "splatfx.render.stage", "splatfx.refine.stage",
                                    "splatfx.comp.stage", "splatfx.viewer.content"])
def test_render_refine_comp_and_viewer_need_no_physics_engine(module: str) -> None:
    code = f"import sys; sys.modules['mujoco'] = None; import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_render_layer_name_is_written_in_one_module() -> None:
    """Layer names ("mask.synthetic", f"matte.{name}", ...) are spelled only in the layer contract."""
    prefixes = ("mask.", "matte.", "motion.", "depth.", "clean.")
    homes: dict[str, set[str]] = {}
    for module, path in all_modules().items():
        text = path.read_text()
        for prefix in prefixes:
            if f'"{prefix}' in text or f"'{prefix}" in text:
                homes.setdefault(prefix, set()).add(module)
    assert set(homes) == set(prefixes), f"layer names not found anywhere: {sorted(set(prefixes) - set(homes))}"
    spread = {prefix: sorted(mods) for prefix, mods in homes.items() if len(mods) != 1}
    assert not spread, f"render layer names written in more than one module: {spread}"
