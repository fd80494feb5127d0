"""Atomic file writes and strict JSON: nothing half-written survives a crash, and every file
vaelab writes is JSON that any parser reads.

Non-finite numbers (the one convention, applied by `strict_json`): JSON has no NaN or
infinity, so every writer here encodes with ``allow_nan=False`` after replacing each
non-finite float by ``null`` and recording why beside it, under the same key with the suffix
``_nonfinite``:

- a value ``{"loss": inf}`` is written ``{"loss": null, "loss_nonfinite": "inf"}`` (the
  reason is ``"nan"``, ``"inf"`` or ``"-inf"``);
- a list under a key carries the reasons of its elements by index (dotted for nested lists):
  ``{"rate": [1.0, nan]}`` → ``{"rate": [1.0, null], "rate_nonfinite": {"1": "nan"}}``;
- dicts inside lists get their own ``_nonfinite`` keys; a non-finite number with no key to
  stand beside (a bare top-level number or one in a top-level list) is refused (ValueError).

`restore_nonfinite` inverts it (the checkpoint metadata uses it, so a resumed run's state
equals the uninterrupted one's); plain readers (`read_json`, `read_jsonl`) stay `json.loads`.

Temporary files: `atomic_write_bytes` writes ``.<name>.<random>.tmp`` beside its target and
renames it over the target; only a kill mid-write leaves one, and
`remove_stale_temporaries` removes them (the trainer calls it at the start of every run).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)
NONFINITE = "_nonfinite"  # suffix of the key that says why a value is null


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file in the same folder, fsynced
    and renamed over `path` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    with atomic_writer(path) as f:
        f.write(data)


def stale_temporaries(folder: str | Path) -> list[Path]:
    """The temporary files `atomic_write_bytes` left in `folder` (not below it), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(".*.tmp") if p.is_file() and p.name.count(".") >= 3)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete what `stale_temporaries` lists; returns the deleted paths. Only for a folder
    that no other process is writing into (a run directory belongs to one run)."""
    removed = stale_temporaries(folder)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def dumps(obj: Any, indent: int | None = None) -> str:
    """`obj` as strict JSON text, non-finite numbers encoded by the convention above."""
    return json.dumps(strict_json(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn line (from a kill mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(dumps(record) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(dumps(r) + "\n" for r in records))


# --- the non-finite convention -------------------------------------------------------------


def strict_json(obj: Any) -> Any:
    """A copy of `obj` made of JSON types only (tensors and numpy values as Python numbers or
    lists, paths as strings, tuples as lists) with every non-finite float replaced by null
    and its reason recorded beside it (see the module docstring)."""
    obj = _plain(obj)
    if isinstance(obj, dict):
        return _strict_dict(obj)
    if isinstance(obj, list):
        value, reasons = _strict_list(obj)
        if reasons:
            raise ValueError(
                f"non-finite number at [{next(iter(reasons))}] of a top-level list: "
                "no key to write its reason beside"
            )
        return value
    if _nonfinite(obj):
        raise ValueError(f"a bare {obj} has no key to write its reason beside")
    return obj


def _strict_dict(obj: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        value = _plain(value)
        if _nonfinite(value):
            out[key], out[f"{key}{NONFINITE}"] = None, _reason(value)
        elif isinstance(value, list):
            out[key], reasons = _strict_list(value)
            if reasons:
                out[f"{key}{NONFINITE}"] = reasons
        else:
            out[key] = _strict_dict(value) if isinstance(value, dict) else value
    return out


def _strict_list(values: list) -> tuple[list, dict[str, str]]:
    """(values with non-finite floats as None, {dotted index: reason})."""
    out, reasons = [], {}
    for i, value in enumerate(values):
        value = _plain(value)
        if _nonfinite(value):
            out.append(None)
            reasons[str(i)] = _reason(value)
        elif isinstance(value, list):
            inner, nested = _strict_list(value)
            out.append(inner)
            reasons |= {f"{i}.{k}": r for k, r in nested.items()}
        else:
            out.append(_strict_dict(value) if isinstance(value, dict) else value)
    return out, reasons


def restore_nonfinite(obj: Any) -> Any:
    """The inverse of `strict_json` on what it wrote: nulls with a reason become floats."""
    if isinstance(obj, list):
        return [restore_nonfinite(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: restore_nonfinite(v) for k, v in obj.items() if not _is_reason(obj, k)}
    for key in list(out):
        reason = obj.get(f"{key}{NONFINITE}")
        if isinstance(reason, str) and out[key] is None:
            out[key] = float(reason)
        elif isinstance(reason, dict) and isinstance(out[key], list):
            for index, why in reason.items():
                *outer, last = (int(i) for i in index.split("."))
                target = out[key]
                for i in outer:
                    target = target[i]
                target[last] = float(why)
    return out


def _is_reason(obj: dict, key: str) -> bool:
    """Whether `obj[key]` is the reason `strict_json` wrote beside a null (or a list)."""
    if not key.endswith(NONFINITE) or key[: -len(NONFINITE)] not in obj:
        return False
    value, reason = obj[key[: -len(NONFINITE)]], obj[key]
    return (isinstance(reason, str) and value is None) or (
        isinstance(reason, dict) and isinstance(value, list)
    )


def _plain(obj: Any) -> Any:
    if isinstance(obj, str | bool | int | float | dict | list) or obj is None:
        return obj
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "tolist"):  # tensors, numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _reason(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
