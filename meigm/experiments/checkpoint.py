"""Checkpoints: the learner state of every seed of a run in one safetensors file.

Layout (``<run_dir>/checkpoints/``)::

    step_<t_env>.safetensors   every ``checkpoint_interval`` env steps (see run.py)
    final.safetensors          at the end of training

A file holds one tensor per array leaf of :class:`~meigm.types.LearnerState`, named by
its tree path joined with ``/`` and stacked over seeds (leading axis = seed, in the
run's seed order)::

    params/agent/params/fc1/kernel                                  [seeds, ...]
    params/log_alpha                                                [seeds]  (ME-IGM: α = exp)
    target_params/mixer/params/hyper_w1/kernel                      [seeds, ...]
    opt_state/inner_states/critic/inner_state/1/0/mu/agent/params/fc1/kernel
    opt_state/inner_states/critic/inner_state/1/0/count             [seeds] int32

Metadata (safetensors allows str -> str; values are JSON): ``format``,
``meigm_version``, ``alg``, ``env``, ``seeds`` (the seed numbers), ``t_env`` (env steps
of each seed), ``eval_index`` (the evaluation point the file was written at, which
``meigm eval`` needs to replay that evaluation's episodes), ``config`` (the resolved
config).

Why this shape: safetensors never executes code on load (unlike pickle), and a flat
``{name: array}`` dict is all it stores. Optax states are pytrees of arrays with
namedtuples, masked and empty nodes in between, which a flat file cannot describe; so
loading unflattens into a *template* — the structure of a freshly initialised state, or
its ``jax.eval_shape`` — and checks every name, shape and dtype first. A checkpoint
written under another config (another mixer, width, algorithm) then fails with a
:class:`MeigmError` naming the first mismatched tensor instead of loading garbage.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

import meigm
from meigm.errors import MeigmError

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.types import LearnerState

#: Written into every checkpoint; bump when the tensor naming or metadata changes.
FORMAT = "meigm-checkpoint/1"
FINAL = "final.safetensors"
_STEP = re.compile(r"^step_(\d+)\.safetensors$")
_PARTS = ("params", "target_params", "opt_state")


def _key_name(key: Any) -> str:
    """One tree-path entry as a name: dict key, sequence index or attribute name."""
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def leaf_names(tree: Any, prefix: str) -> list[str]:
    """``prefix/<path>`` of every leaf, in ``tree_flatten`` order."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ["/".join([prefix, *(_key_name(k) for k in path)]) for path, _ in paths]


def _parts(state: LearnerState) -> dict[str, Any]:
    return {"params": state.params, "target_params": state.target_params, "opt_state": state.opt_state}


def _named_leaves(state: LearnerState) -> tuple[list[str], list[Any]]:
    """Names and leaves of a learner state, parts in ``_PARTS`` order."""
    parts = _parts(state)
    names = [n for p in _PARTS for n in leaf_names(parts[p], p)]
    leaves = [leaf for p in _PARTS for leaf in jax.tree_util.tree_leaves(parts[p])]
    if len(set(names)) != len(names):  # e.g. a dict key containing '/'
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise MeigmError(f"checkpoint tensor names collide: {dupes[:3]}")
    return names, leaves


def flatten_state(state: LearnerState) -> dict[str, np.ndarray]:
    """Learner state (leaves [seeds, ...]) -> flat ``{name: array}`` for safetensors."""
    names, leaves = _named_leaves(state)
    return {n: np.ascontiguousarray(np.asarray(leaf)) for n, leaf in zip(names, leaves, strict=True)}


def save_checkpoint(
    path: str | Path,
    state: LearnerState,
    cfg: Config,
    t_env: Sequence[int],
    eval_index: int,
) -> Path:
    """Write ``state`` (leaves [seeds, ...]) atomically: a temporary file, then a rename.

    A crash mid-write leaves at most a stray ``.tmp`` file, never a truncated checkpoint
    under the real name, so :func:`latest_checkpoint` only ever sees complete files.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = flatten_state(jax.device_get(state))
    metadata = {
        "format": FORMAT,
        "meigm_version": meigm.__version__,
        "alg": cfg.alg,
        "env": cfg.env,
        "seeds": json.dumps([cfg.seed + i for i in range(cfg.seeds)]),
        "t_env": json.dumps([int(t) for t in t_env]),
        "eval_index": json.dumps(int(eval_index)),
        "config": json.dumps(cfg.to_dict()),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _unreadable(path: Path, exc: BaseException) -> MeigmError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return MeigmError(f"cannot read checkpoint {path}: {reason} (corrupt or not a safetensors file?)")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata with JSON values decoded; a user error if unreadable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MeigmError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise _unreadable(path, exc) from None
    if raw.get("format") != FORMAT:
        found = raw.get("format", "none")
        raise MeigmError(f"{path} is not a {FORMAT} checkpoint (format: {found}); it cannot be evaluated")
    meta: dict[str, Any] = dict(raw)
    for key in ("seeds", "t_env", "eval_index", "config"):
        try:
            meta[key] = json.loads(raw[key])
        except (KeyError, json.JSONDecodeError):
            raise MeigmError(f"checkpoint {path} has no valid {key!r} metadata") from None
    return meta


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def load_checkpoint(path: str | Path, template: LearnerState) -> tuple[LearnerState, dict[str, Any]]:
    """Restore a learner state into the structure of ``template``.

    ``template``: a learner state with leaves [seeds, ...] — arrays or
    ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of the vmapped ``init`` costs nothing).
    Returns the state with numpy leaves and the decoded metadata. Every tensor name,
    shape and dtype is checked against the template; a mismatch names the tensor.
    """
    from safetensors import safe_open

    path = Path(path)
    meta = read_metadata(path)
    names, leaves = _named_leaves(template)
    expected = dict(zip(names, leaves, strict=True))
    try:
        with safe_open(str(path), framework="numpy") as f:
            found = set(f.keys())
            missing = [n for n in names if n not in found]
            extra = sorted(found - set(names))
            if missing or extra:
                what = (f"tensor {missing[0]!r} expected by this config is missing" if missing
                        else f"tensor {extra[0]!r} is not part of this config's state")
                raise MeigmError(
                    f"checkpoint {path} does not match this config: {what} "
                    f"({len(missing)} missing, {len(extra)} unexpected; written by a run with "
                    f"another algorithm or network config?)"
                )
            arrays = []
            for name in names:
                arr = f.get_tensor(name)
                want = expected[name]
                if _shape(arr) != _shape(want) or np.dtype(arr.dtype) != np.dtype(want.dtype):
                    raise MeigmError(
                        f"checkpoint {path} does not match this config: tensor {name!r} is "
                        f"{arr.dtype}{list(arr.shape)} in the file, {np.dtype(want.dtype)}"
                        f"{list(_shape(want))} expected ([seeds, ...]; another config or seed count?)"
                    )
                arrays.append(arr)
    except MeigmError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    parts = _parts(template)
    restored = {}
    start = 0
    for p in _PARTS:
        treedef = jax.tree_util.tree_structure(parts[p])
        restored[p] = jax.tree_util.tree_unflatten(treedef, arrays[start:start + treedef.num_leaves])
        start += treedef.num_leaves
    return template.replace(**restored), meta


def checkpoint_path(run_dir: str | Path, t_env: int | None) -> Path:
    """``checkpoints/step_<t_env>.safetensors``, or ``final.safetensors`` for None."""
    name = FINAL if t_env is None else f"step_{int(t_env)}.safetensors"
    return Path(run_dir) / "checkpoints" / name


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Interval checkpoints by env steps, then the final one (oldest first)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    steps = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)))
    out = [p for _, p in steps]
    if (folder / FINAL).is_file():
        out.append(folder / FINAL)
    return out


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint of a run: ``final`` if training finished, else the highest step."""
    found = list_checkpoints(run_dir)
    if not found:
        raise MeigmError(f"no checkpoint in {Path(run_dir) / 'checkpoints'} (did the run save any?)")
    return found[-1]
