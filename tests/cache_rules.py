"""Fingerprints of the code each kind of cache entry depends on (fercore.cache.entries.RULES), recorded per
version in tests/cache_rules.json. A code unit is a module, a package (its modules, sorted) or module:function;
its fingerprint is its syntax tree without docstrings (so comments and docstrings may change freely).

    python -m tests.cache_rules           # print the kinds whose code changed since their version was recorded
    python -m tests.cache_rules --write   # record the current fingerprints (after bumping what changed)
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).with_name("cache_rules.json")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def unit_source(unit: str) -> str:
    """The normalised syntax of one code unit."""
    path, _, function = unit.partition(":")
    target = ROOT / path
    files = sorted(target.glob("*.py")) if target.is_dir() else [target]
    parts = []
    for file in files:
        tree = _strip_docstrings(ast.parse(file.read_text()))
        if function:
            found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == function]
            if not found:
                raise LookupError(f"{unit}: no top-level function or class {function} in {path}")
            tree = found[0]
        parts.append(f"{file.relative_to(ROOT)}\n{ast.dump(tree, include_attributes=False)}")
    return "\n".join(parts)


def fingerprints() -> dict[str, dict[str, str]]:
    """version -> {code unit: fingerprint} for every kind of entry."""
    from fercore.cache.entries import RULES

    return {version: {u: hashlib.sha256(unit_source(u).encode()).hexdigest()[:16] for u in units}
            for version, units in RULES.values()}


def changed() -> dict[str, list[str]]:
    """version -> the code units whose fingerprint differs from the one recorded for that version (every unit when
    the version was never recorded)."""
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    out = {}
    for version, units in fingerprints().items():
        old = recorded.get(version, {})
        moved = [u for u, f in units.items() if old.get(u) != f]
        if moved:
            out[version] = moved
    return out


if __name__ == "__main__":
    if "--write" in sys.argv:
        RECORD.write_text(json.dumps(fingerprints(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORD}")
    else:
        print(json.dumps(changed(), indent=1) or "{}")
