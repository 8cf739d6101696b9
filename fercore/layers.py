"""The layers of fercore and what each may import, as data: tests/test_layers.py checks the whole package's import
graph against it, benchmarks/code_shape.py prints what runs against it, and docs/development.md's layout section
describes it.

Layers are listed bottom first; a module may import its own layer and the layers below it, unless its layer names the
only ones it may import (`only`). Imports inside functions count, and so does a module path written as a string
(`importlib.import_module("fercore.x")`): a dependency that no import statement shows is still a dependency.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # module names or package prefixes (fercore.data covers fercore.data.*)
    purpose: str
    only: tuple[str, ...] | None = None  # the layers this one may import besides itself; None: every layer below


LAYERS = (
    Layer("ground", ("fercore.errors", "fercore.atomic", "fercore.labels", "fercore.params", "fercore.sections",
                     "fercore.registry", "fercore.numbers", "fercore.pareto", "fercore.layers", "fercore.images",
                     "fercore.redact", "fercore.faults"),
          "errors, secrets redacted from output, named kill points for durability tests, atomic writes, class "
          "names, parameters, the registry type, small numeric helpers, the image "
          "layout (gray or colour arrays <-> tensors)", only=()),
    Layer("data", ("fercore.data",), "sources (FER2013 CSV, folders, RAF-DB, procedural) -> FaceSet"),
    Layer("measures", ("fercore.metrics",), "measurement only: classification, quality, leakage, embedding, uplift",
          only=("ground",)),
    Layer("parts", ("fercore.generators", "fercore.classifiers", "fercore.augment", "fercore.transforms"),
          "networks and their registries, mixing policies and quality filters (the augment.* keys), the random "
          "transforms of a training batch (the train.* keys)"),
    Layer("config", ("fercore.config",), "one validated config per trial; imports the registries it selects from"),
    Layer("training", ("fercore.train", "fercore.reference"),
          "the classifier training loop; the reference classifier that judges synthetic images"),
    Layer("cache", ("fercore.cache", "fercore.synthetic"),
          "content-addressed, checksummed, locked entries: generators, pools, reference, baselines"),
    Layer("trial", ("fercore.trial",), "train -> restore best -> test read once -> audit -> comparisons -> one row"),
    Layer("results", ("fercore.results",), "rows appended as Parquet parts; TensorBoard writers",
          only=("ground",)),
    Layer("report", ("fercore.report",), "Parquet tables -> report.md, report.html, plots; no runtime registry",
          only=("ground", "results")),
    Layer("sweep", ("fercore.sweep",),
          "the only Ray code: sweep files, spaces, searchers, trainable, driver callback, storage, resume state"),
    Layer("cli", ("fercore.cli",), "`fersweep` verbs; nothing imports it"),
)
RAY_LAYER = "sweep"  # the only layer that may import ray


def layer_of(module: str) -> Layer | None:
    best = None
    for layer in LAYERS:
        for prefix in layer.modules:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (layer, prefix)
    return best[0] if best else None


def allowed(importer: Layer, imported: Layer) -> bool:
    if importer is imported:
        return True
    below = [layer.name for layer in LAYERS[:LAYERS.index(importer)]]
    return imported.name in (importer.only if importer.only is not None else below)


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module PATH imports (statements anywhere in the file, relative ones resolved) and every string constant
    that names a fercore module."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from fercore import trial` imports the module fercore.trial.
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("fercore.") \
                and all(part.isidentifier() for part in node.value.split(".")):
            found.add(node.value)
    return found


def violations(root: Path) -> list[str]:
    """'importer -> imported: why' for every import of the package under ROOT (the fercore folder) that runs against
    the layers, sorted."""
    root = Path(root)
    known = {module_name(p, root) for p in root.rglob("*.py")}
    out = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        if module in (root.name, __name__):
            continue  # the package's own (empty) __init__; this file, whose module paths are the map, not imports
        importer = layer_of(module)
        if importer is None:
            out.append(f"{module}: in no layer (add it to fercore/layers.py)")
            continue
        for name in sorted(imports_of(path, module)):
            if name.split(".")[0] == "ray" and importer.name != RAY_LAYER:
                out.append(f"{module} -> {name}: only the {RAY_LAYER} layer imports Ray")
            if not name.startswith("fercore.") or name not in known:
                continue  # third-party, or `from fercore.x import function`
            imported = layer_of(name)
            if imported is not None and not allowed(importer, imported):
                out.append(f"{module} -> {name}: layer {importer.name} may not import layer {imported.name}")
    return out
