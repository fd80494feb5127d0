"""Checkpoints as safetensors files: tensors plus JSON metadata, never pickle.

Loading cannot execute code: a file that is not a valid safetensors file (a pickle, say) is
refused with a `CheckpointError` before anything in it is interpreted. Writing refuses a
floating tensor that is not finite, so no checkpoint on disk holds NaN or inf; the metadata is
strict JSON (`files.dumps`), its non-finite numbers restored on reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn

from .errors import CheckpointError
from .files import atomic_write_bytes, dumps, restore_nonfinite

_META_KEY = "vaelab"


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    """Atomically write `tensors` and JSON `metadata` to `path`; refuses (CheckpointError,
    nothing written) when a floating tensor holds a value that is not finite."""
    bad = nonfinite_tensors(tensors)
    if bad:
        name, count = next(iter(bad.items()))
        raise CheckpointError(
            f"refusing to write checkpoint {str(path)!r}: tensor {name!r} holds {count} "
            f"non-finite values ({len(bad)} tensors in all)"
        )
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = save_safetensors_bytes(tensors, metadata={_META_KEY: dumps(metadata)})
    atomic_write_bytes(path, data)


def nonfinite_tensors(tensors: dict[str, Tensor]) -> dict[str, int]:
    """{name: number of NaN/inf values} of the floating tensors that are not all finite, in
    the order of `tensors`."""
    counts = {}
    for name, value in tensors.items():
        if value.is_floating_point() or value.is_complex():
            value = value.detach()
            if torch.isfinite(value.sum()):  # NaN/inf anywhere makes the sum non-finite
                continue  # (a finite tensor whose sum overflows is counted below: 0)
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                counts[name] = bad
    return counts


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint written by `save_checkpoint`."""
    return _read(path, tensors=True)


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """Only the metadata (step, config, …) of a checkpoint, without reading its tensors."""
    return _read(path, tensors=False)[1]


def _read(path: str | Path, tensors: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = restore_nonfinite(json.loads((f.metadata() or {})[_META_KEY]))
            values = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}
    except Exception as exc:  # noqa: BLE001 — any parse failure means "not ours"
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a valid vaelab safetensors checkpoint ({detail}); "
            "refusing to load it"
        ) from None
    return values, metadata


# --- optimiser state ↔ flat tensors + JSON ------------------------------------------------


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Split an optimiser state dict into flat tensors and JSON-able structure."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def load_model_weights(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Load 'model.*' tensors into `model`, failing with one line on any mismatch."""
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{source}: weights do not fit the model ({' '.join(first[1:2]).strip() or first[0]})"
        ) from None
