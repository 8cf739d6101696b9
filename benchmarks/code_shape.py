"""The shape of the package: its largest files and functions, and the imports that run against its layers
(fercore/layers.py). Run on any checkout to compare before and after a rebuild:

    python benchmarks/code_shape.py [FERCORE_FOLDER]        # default: this checkout's fercore/
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fercore.layers import violations  # noqa: E402

TOP = 8


def functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.end_lineno - node.lineno + 1, f"{path.name}:{node.name}"))
    return out


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "fercore"
    files = sorted(((len(p.read_text().splitlines()), str(p.relative_to(root.parent))) for p in root.rglob("*.py")),
                   reverse=True)
    funcs = sorted((f for p in root.rglob("*.py") for f in functions(p)), reverse=True)
    print(f"{root}: {len(files)} files, {sum(n for n, _ in files)} lines")
    print("largest files:     " + ", ".join(f"{name} {n}" for n, name in files[:TOP]))
    print("largest functions: " + ", ".join(f"{name} {n}" for n, name in funcs[:TOP]))
    found = violations(root)
    print(f"imports against the layers: {len(found)}")
    for line in found:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
