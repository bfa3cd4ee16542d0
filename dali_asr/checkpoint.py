"""Saving the loader's position beside a model checkpoint.

    save_checkpoint("ckpt/step_1000.pt", loader, model=model, optimizer=optimizer, step=1000)
    extra = load_checkpoint("ckpt/step_1000.pt", loader, model=model, optimizer=optimizer)

A single pass's state is global (every rank can save it, any world size can load it). A
training stream's state is one rank's: ``rank_path`` gives each rank its own file, and loading
on another number of ranks reads every rank's file (elastic resume, ``dali_asr.resume.elastic``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def rank_path(path: str | Path, rank: int) -> Path:
    """``ckpt.pt`` → ``ckpt.rank3.pt``: one file per rank for training streams."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def save_checkpoint(path: str | Path, loader, **objects: Any) -> Path:
    """``torch.save`` the loader's state and every object's ``state_dict()`` (or the object
    itself when it has none, e.g. a step count). Training streams write one file per rank."""
    path = Path(path)
    if loader.endless and loader.world_size > 1:
        path = rank_path(path, loader.rank)
    payload = {"dali_asr": loader.state_dict()}
    for name, obj in objects.items():
        payload[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash while saving never leaves half a checkpoint
    return path


def load_checkpoint(path: str | Path, loader, map_location: Any = "cpu", **objects: Any) -> dict:
    """Load a ``save_checkpoint`` file into the loader and the given objects (through
    ``load_state_dict``); return the entries no object took (e.g. the step). A training stream
    saved on another number of ranks loads the loader's share of every rank's state; the
    objects then come from rank 0's file (data-parallel replicas hold the same model)."""
    path = Path(path)

    def read(file: Path) -> dict:
        return torch.load(file, map_location=map_location, weights_only=False)

    per_rank = loader.endless and rank_path(path, 0).exists()
    payload = read(rank_path(path, 0) if per_rank else path)
    state = payload.pop("dali_asr")
    saved = int(state["config"]["world_size"])
    if per_rank and saved == loader.world_size and loader.rank > 0:
        payload = read(rank_path(path, loader.rank))
        state = payload.pop("dali_asr")
    elif per_rank and saved != loader.world_size:
        state = [state] + [read(rank_path(path, r))["dali_asr"] for r in range(1, saved)]
    loader.load_state_dict(state)
    for name, obj in objects.items():
        obj.load_state_dict(payload.pop(name))
    return payload
