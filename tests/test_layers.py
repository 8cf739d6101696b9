"""The core's imports flow one way (shared/architecture.md): the ground floor (params, registry, errors) imports
nothing above it, the registries stand on fercore.params and never on fercore.config, config imports the registries
the ordinary way, and fercore.metrics measures without importing training code. Read from the source files' import
statements (every one, also those inside functions), followed transitively, so no module needs importing here."""
import ast
from functools import cache
from pathlib import Path

import pytest

import fercore

ROOT = Path(fercore.__file__).parent


def module_file(name: str) -> Path | None:
    """The source file of fercore module NAME (a package's __init__.py), or None if there is none."""
    path = ROOT.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def direct_imports(name: str) -> frozenset[str]:
    """The fercore modules NAME's source imports: `from fercore.a import b` counts fercore.a, and fercore.a.b where
    that is a module."""
    tree = ast.parse(module_file(name).read_text())
    package = name if module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return frozenset(m for m in found if m.split(".")[0] == "fercore" and module_file(m))


def closure(name: str) -> set[str]:
    """Every fercore module importing NAME loads: its imports, theirs, and each imported module's packages."""
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += direct_imports(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # fercore.a.b runs fercore/a/__init__.py
    return seen - {name}


def modules_under(folder: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / folder).rglob("*.py"))


REGISTRY_PACKAGES = ("generators", "classifiers", "augment", "metrics")


@pytest.mark.parametrize("ground", ["fercore.params", "fercore.registry", "fercore.errors"])
def test_the_ground_floor_imports_nothing_of_fercore_but_errors(ground):
    assert closure(ground) <= {"fercore", "fercore.errors"}, closure(ground)


@pytest.mark.parametrize("module", [m for p in REGISTRY_PACKAGES for m in modules_under(p)])
def test_no_registry_module_stands_on_config(module):
    assert "fercore.config" not in closure(module), f"{module} imports fercore.config (directly or through others)"


@pytest.mark.parametrize("module", modules_under("metrics"))
def test_metrics_import_no_training_code(module):
    training = {"fercore.train", "fercore.reference", "fercore.trial", "fercore.synthetic", "fercore.cache.entries"}
    assert not closure(module) & training, closure(module) & training
    assert not any(m.startswith(("fercore.classifiers", "fercore.generators")) for m in closure(module))


def test_config_imports_the_registries_by_name_not_by_string():
    assert {"fercore.generators", "fercore.classifiers", "fercore.augment.policies"} <= direct_imports("fercore.config")
    assert "importlib" not in (ROOT / "config.py").read_text()


def test_the_import_reader_sees_what_python_imports():
    """The checks above are only as good as this reader: it finds the imports a known module really makes."""
    assert direct_imports("fercore.trial") >= {"fercore.train", "fercore.config", "fercore.metrics"}
    assert "fercore.train" in closure("fercore.reference") and "fercore.params" in closure("fercore.config")
