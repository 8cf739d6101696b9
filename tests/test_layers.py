"""The core's imports flow one way (shared/architecture.md): the ground floor (params, registry, errors) imports
nothing above it, the registries stand on fercore.params and never on fercore.config, config imports the registries
the ordinary way, and fercore.metrics measures without importing training code; and every import of the package
keeps to the layer table of fercore/layers.py (docs/development.md's layout section). Read from the source files' import
statements (every one, also those inside functions), followed transitively, so no module needs importing here."""
from functools import cache
from pathlib import Path

import pytest

import fercore
from fercore import layers

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
    """The fercore modules NAME's source imports (fercore.layers' reader: `from fercore.a import b` counts fercore.a,
    and fercore.a.b where that is a module; module paths written as strings count too)."""
    found = layers.imports_of(module_file(name), name)
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


def test_no_import_runs_against_the_layer_table():
    assert layers.violations(ROOT) == []


def test_every_module_is_in_a_layer_and_the_table_names_no_missing_module():
    modules = {layers.module_name(p, ROOT) for p in ROOT.rglob("*.py")} - {"fercore"}
    assert all(layers.layer_of(m) is not None for m in modules), [m for m in modules if layers.layer_of(m) is None]
    for layer in layers.LAYERS:
        for prefix in layer.modules:
            assert any(m == prefix or m.startswith(prefix + ".") for m in modules), f"{layer.name}: {prefix} is gone"


def test_the_layer_check_catches_an_upward_import_a_ray_import_and_a_string(tmp_path):
    """A package shaped like fercore with three planted faults: each is reported, with the layers it crosses."""
    pkg = tmp_path / "fercore"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text("")
    (pkg / "metrics" / "__init__.py").write_text("")
    (pkg / "metrics" / "quality.py").write_text("def f():\n    from fercore.train import Trainer\n")
    (pkg / "report").mkdir()
    (pkg / "report" / "__init__.py").write_text("import ray\nNAME = 'fercore.train'\n")
    found = layers.violations(pkg)
    assert "fercore.metrics.quality -> fercore.train: layer measures may not import layer training" in found
    assert "fercore.report -> ray: only the sweep layer imports Ray" in found
    assert "fercore.report -> fercore.train: layer report may not import layer training" in found
    assert len(found) == 3, found
