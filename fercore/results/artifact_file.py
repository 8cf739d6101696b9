"""A finished trial's artifacts (its row, confusion matrix, embedding points, sample grid, test predictions) as one
file, which its worker hands to the driver instead of sending them through Ray Tune's results (whose last result per
trial Ray keeps, with running statistics of every number in it, for the whole sweep).

The format is read back without unpickling anything: an .npz whose arrays are the artifacts' numpy arrays and bytes
(named by their path of keys), and whose `__meta__.json` entry holds everything else as JSON.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fercore.errors import UserError

META = "__meta__"
BYTES = "bytes:"  # the prefix of an array entry that was a bytes value (a PNG)


def encode(artifacts: dict[str, Any]) -> bytes:
    """ARTIFACTS (nested dicts of JSON values, numpy arrays and bytes; keys without "/") as the file's bytes."""
    arrays: dict[str, np.ndarray] = {}

    def split(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or "/" in key:
                    raise ValueError(f"artifacts: key {key!r} at {path or 'the top'}; expected a string without '/'")
            return {key: split(v, f"{path}/{key}" if path else key) for key, v in value.items()}
        if isinstance(value, np.ndarray):
            arrays[path] = value
            return {"__array__": path}
        if isinstance(value, (bytes, bytearray)):
            arrays[BYTES + path] = np.frombuffer(bytes(value), dtype=np.uint8)
            return {"__bytes__": path}
        return value

    meta = split(artifacts, "")
    buffer = io.BytesIO()
    # Uncompressed: the predictions' probabilities hardly compress, and the file lives a few seconds.
    np.savez(buffer, **{META: np.frombuffer(json.dumps(meta, default=_plain).encode(), dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def decode(data: bytes | Path, where: str, arrays: bool = True) -> dict[str, Any]:
    """The artifacts in DATA (a file's bytes, or its path; read from WHERE, named in errors). Without ARRAYS only the
    JSON part is read, each array and bytes value None: what the driver holds of a trial until it commits it."""
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as npz:
            entries = {name: npz[name] for name in npz.files if arrays or name == META}
        meta = json.loads(entries.pop(META).tobytes())
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{where}: not a trial's artifact file written by fercore ({e})") from None

    def join(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"__array__"}:
                return entries[value["__array__"]] if arrays else None
            if set(value) == {"__bytes__"}:
                return entries[BYTES + value["__bytes__"]].tobytes() if arrays else None
            return {key: join(v) for key, v in value.items()}
        return value

    return join(meta)


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars and tuples a row holds."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"artifacts: {type(value).__name__} is not JSON, an array or bytes")
