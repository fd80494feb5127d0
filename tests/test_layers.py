"""One direction of dependency: no module of vaelab imports one of a higher layer
(the order is declared once, in vaelab/layers.py)."""

import ast
from pathlib import Path

import vaelab
from vaelab.layers import LAYERS, layer_of

PACKAGE = Path(vaelab.__file__).parent


def top_level(path: Path) -> str:
    """The layer entry a source file belongs to: its top-level module or package name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def package_of(path: Path) -> tuple[str, ...]:
    """The package a source file's relative imports start from, e.g. ('vaelab', 'models')."""
    return path.relative_to(PACKAGE.parent).parts[:-1]


def imported_modules(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, top-level vaelab module) of every import in `source`, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
                names = [target] if node.module else [(*base, a.name) for a in node.names]
            else:
                names = [tuple(node.module.split("."))]
        elif isinstance(node, ast.Import):
            names = [tuple(a.name.split(".")) for a in node.names]
        else:
            continue
        for name in names:
            if name[0] == "vaelab" and len(name) > 1:
                found.append((node.lineno, name[1]))
    return found


def test_every_module_is_in_a_layer():
    missing = sorted(
        {top_level(p) for p in PACKAGE.rglob("*.py")} - {name for layer in LAYERS for name in layer}
    )
    assert not missing, f"add these to vaelab/layers.py: {missing}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = layer_of(top_level(path))
        for line, target in imported_modules(path.read_text(), package_of(path)):
            if layer_of(target) > own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports vaelab.{target}")
    assert not upward, "\n".join(upward)


def test_the_walker_sees_relative_absolute_and_lazy_imports():
    source = "import vaelab.data\ndef f():\n    from ..training import fit\n    from . import vae\n"
    found = imported_modules(source, ("vaelab", "models"))
    assert found == [(1, "data"), (3, "training"), (4, "models")]
