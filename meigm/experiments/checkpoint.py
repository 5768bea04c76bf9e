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

Interval checkpoints (``step_<t>``) also hold the rest of the training state, so a run
can resume exactly (``meigm train --resume``): the replay buffer, the seeds' key streams
and the counters, under ``train/``::

    train/buffer/data/obs                                           [seeds, C, T+1, N, O]
    train/buffer/ptr, train/key, train/t_env, train/episodes, ...   [seeds, ...]

No environment state is stored: every collection starts fresh episodes from the key
stream (the JAX roll-out resets its environments with a key split from the seed's key,
the host roll-out with integer seeds drawn from it), so the key *is* the re-seeding rule.
The final checkpoint leaves the buffer out (a finished run is not resumed, and the
paper's buffer is ~4 GB per seed).

Metadata (safetensors allows str -> str; values are JSON): ``format``,
``meigm_version``, ``alg``, ``env``, ``seeds`` (the seed numbers), ``t_env`` (env steps
of each seed), ``eval_index`` (the evaluation point the file was written at, which
``meigm eval`` needs to replay that evaluation's episodes, and the number of
``metrics.jsonl`` points a resumed run keeps), ``config`` (the resolved config),
``sha256`` ({tensor name: digest of its dtype, shape and bytes}: a truncated or
bit-flipped file is detected on load, tensor by tensor, so loading only the learner
state does not read the buffer), ``run`` (resume bookkeeping: next checkpoint step,
diverged seeds).

Why this shape: safetensors never executes code on load (unlike pickle), and a flat
``{name: array}`` dict is all it stores. Optax states are pytrees of arrays with
namedtuples, masked and empty nodes in between, which a flat file cannot describe; so
loading unflattens into a *template* — the structure of a freshly initialised state, or
its ``jax.eval_shape`` — and checks every name, shape and dtype first. A checkpoint
written under another config (another mixer, width, algorithm) then fails with a
:class:`MeigmError` naming the first mismatched tensor instead of loading garbage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

import meigm
from meigm.errors import MeigmError
from meigm.provenance import provenance

if TYPE_CHECKING:
    from meigm.config import Config
    from meigm.program import TrainState
    from meigm.types import LearnerState

#: Written into every checkpoint; bump when the tensor naming or metadata changes.
FORMAT = "meigm-checkpoint/2"
#: Formats this version reads (1: learner state only, no checksums).
READABLE = ("meigm-checkpoint/1", FORMAT)
#: Prefix of the tensors that are not part of the learner state.
TRAIN = "train"
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


def _train_rest(state: TrainState, with_buffer: bool) -> dict[str, Any]:
    """The training state beside the learner's, by name: the counters and key stream,
    and the data scheme's fields (the replay buffer ``buffer`` — left out without
    ``with_buffer`` — and ``last_target_update``; nothing for on-policy learners), so a
    replay run's tensor names are those of format 2."""
    rest = {"key": state.key, "t_env": state.t_env, "episodes": state.episodes,
            "updates": state.updates}
    data = state.data
    if dataclasses.is_dataclass(data):
        rest.update({f.name: getattr(data, f.name) for f in dataclasses.fields(data)
                     if with_buffer or f.name != "buffer"})
    return rest


def flatten_state(state: LearnerState | TrainState, with_buffer: bool = True) -> dict[str, np.ndarray]:
    """Learner or training state (leaves [seeds, ...]) -> flat ``{name: array}``.

    A :class:`~meigm.program.TrainState` adds its other fields under ``train/``; the
    buffer only with ``with_buffer``."""
    learner = getattr(state, "learner", state)
    names, leaves = _named_leaves(learner)
    if learner is not state:
        rest = _train_rest(state, with_buffer)
        names += leaf_names(rest, TRAIN)
        leaves += jax.tree_util.tree_leaves(rest)
    return {n: np.ascontiguousarray(np.asarray(leaf)) for n, leaf in zip(names, leaves, strict=True)}


def tensor_digest(arr: np.ndarray) -> str:
    """sha256 of a tensor's dtype, shape and bytes (what the checksum metadata holds)."""
    h = hashlib.sha256(f"{arr.dtype.str}{list(arr.shape)}".encode())
    h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return h.hexdigest()


class CheckpointWriteError(MeigmError):
    """A checkpoint could not be written (full disk, permissions); the previous one stands."""


class CheckpointCorrupt(MeigmError):
    """A checkpoint file is damaged (truncated, a flipped bit, an unreadable header): unlike
    a checkpoint of another config or meigm version, the one before it may be used."""


def save_checkpoint(
    path: str | Path,
    state: LearnerState | TrainState,
    cfg: Config,
    t_env: Sequence[int],
    eval_index: int,
    with_buffer: bool = True,
    run_meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``state`` (leaves [seeds, ...]) atomically: a temporary file, then a rename.

    A crash mid-write leaves at most a stray ``.tmp`` file, never a truncated checkpoint
    under the real name, and the previous checkpoints are untouched. A disk without room
    for the file is found before writing (and an ``OSError`` while writing is caught):
    either raises :class:`CheckpointWriteError`, with nothing left behind.
    """
    from safetensors.numpy import save_file

    from meigm.experiments.run import byte_size

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(f"cannot create {path.parent}: {exc.strerror}") from None
    tensors = flatten_state(jax.device_get(state), with_buffer=with_buffer)
    size = sum(a.nbytes for a in tensors.values())
    free = shutil.disk_usage(path.parent).free
    if size + (1 << 20) > free:
        raise CheckpointWriteError(
            f"not enough disk space for checkpoint {path.name} in {path.parent}: it needs "
            f"{byte_size(size)}, {byte_size(free)} free")
    metadata = {
        "format": FORMAT,
        "meigm_version": meigm.__version__,
        "alg": cfg.alg,
        "env": cfg.env,
        "seeds": json.dumps([cfg.seed + i for i in range(cfg.seeds)]),
        "t_env": json.dumps([int(t) for t in t_env]),
        "eval_index": json.dumps(int(eval_index)),
        "config": json.dumps(cfg.to_dict()),
        "sha256": json.dumps({n: tensor_digest(a) for n, a in tensors.items()}),
        "run": json.dumps(run_meta or {}),
        # what produced it: meigm's commit and the library versions (meigm.provenance)
        "provenance": json.dumps(provenance(device=False)),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointWriteError(
            f"could not write checkpoint {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _unreadable(path: Path, exc: BaseException) -> CheckpointCorrupt:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return CheckpointCorrupt(f"cannot read checkpoint {path}: {reason} (corrupt or not a "
                             "safetensors file?)")


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
    if raw.get("format") not in READABLE:
        found = raw.get("format", "none")
        raise MeigmError(f"{path} is not a meigm checkpoint this version reads (format: {found}; "
                         f"readable: {', '.join(READABLE)})")
    if raw.get("meigm_version") != meigm.__version__:
        raise MeigmError(
            f"checkpoint {path} was written by meigm {raw.get('meigm_version', 'unknown')}, this is "
            f"meigm {meigm.__version__}; load it with that version (tensor layouts may differ)")
    meta: dict[str, Any] = dict(raw)
    meta.setdefault("sha256", "{}")
    meta.setdefault("run", "{}")
    for key in ("seeds", "t_env", "eval_index", "config", "sha256", "run"):
        try:
            meta[key] = json.loads(meta[key])
        except (KeyError, json.JSONDecodeError):
            raise CheckpointCorrupt(f"checkpoint {path} has no valid {key!r} metadata") from None
    return meta


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _read_tensors(path: Path, meta: dict[str, Any], names: list[str], leaves: list[Any],
                  train_part: bool) -> list[np.ndarray]:
    """The tensors ``names`` of a checkpoint, each checked against its template leaf
    (shape, dtype) and its recorded digest. Only one part is read — the learner state or
    the ``train/`` tensors; a tensor of that part the template lacks is a config mismatch."""
    from safetensors import safe_open

    expected = dict(zip(names, leaves, strict=True))
    digests = meta.get("sha256") or {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            found = set(f.keys())
            missing = [n for n in names if n not in found]
            extra = sorted(n for n in found - set(names)
                           if n.startswith(TRAIN + "/") == train_part)
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
                if name in digests and tensor_digest(arr) != digests[name]:
                    raise CheckpointCorrupt(f"checkpoint {path} is corrupt: tensor {name!r} does "
                                            "not match its checksum")
                arrays.append(arr)
    except MeigmError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    return arrays


def load_checkpoint(path: str | Path, template: LearnerState) -> tuple[LearnerState, dict[str, Any]]:
    """Restore a learner state into the structure of ``template``.

    ``template``: a learner state with leaves [seeds, ...] — arrays or
    ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of the vmapped ``init`` costs nothing).
    Returns the state with numpy leaves and the decoded metadata. Every tensor name,
    shape, dtype and checksum is checked; a mismatch names the tensor. The ``train/``
    tensors of an interval checkpoint are not read.
    """
    path = Path(path)
    meta = read_metadata(path)
    names, leaves = _named_leaves(template)
    arrays = _read_tensors(path, meta, names, leaves, train_part=False)
    parts = _parts(template)
    restored = {}
    start = 0
    for p in _PARTS:
        treedef = jax.tree_util.tree_structure(parts[p])
        restored[p] = jax.tree_util.tree_unflatten(treedef, arrays[start:start + treedef.num_leaves])
        start += treedef.num_leaves
    return template.replace(**restored), meta


def load_train_state(path: str | Path, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """Restore a whole training state (what ``--resume`` continues from): the learner
    state as :func:`load_checkpoint`, plus the buffer, keys and counters under
    ``train/``. A checkpoint without them (a final one) is an error."""
    path = Path(path)
    read_metadata(path)
    rest = _train_rest(template, with_buffer=True)
    names = leaf_names(rest, TRAIN)
    if not _holds(path, names):
        what = "no replay buffer" if "buffer" in rest else "not the whole training state"
        raise MeigmError(f"checkpoint {path} holds {what} (a final checkpoint, or one "
                         "written before meigm-checkpoint/2); it cannot be resumed from")
    learner, meta = load_checkpoint(path, template.learner)
    arrays = _read_tensors(path, meta, names, jax.tree_util.tree_leaves(rest), train_part=True)
    rest = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(rest), arrays)
    counters = {k: rest.pop(k) for k in ("key", "t_env", "episodes", "updates")}
    data = template.data.replace(**rest) if rest else template.data
    return template.replace(learner=learner, data=data, **counters), meta


def read_tensors(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named tensors of a checkpoint as stored (``[seeds, ...]``), each checked against its
    recorded digest, without a template: for reading one part of a file (say the replay
    buffer's ``train/buffer/data/mask``) without building the run's state."""
    from safetensors import safe_open

    path = Path(path)
    digests = read_metadata(path).get("sha256") or {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            found = set(f.keys())
            missing = [n for n in names if n not in found]
            if missing:
                raise MeigmError(f"checkpoint {path} has no tensor {missing[0]!r} (a final "
                                 "checkpoint holds no replay buffer; use a step_<t> one)")
            out = {n: f.get_tensor(n) for n in names}
    except MeigmError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    for name, arr in out.items():
        if name in digests and tensor_digest(arr) != digests[name]:
            raise CheckpointCorrupt(f"checkpoint {path} is corrupt: tensor {name!r} does not match "
                                    "its checksum")
    return out


def _holds(path: Path, names: list[str]) -> bool:
    """Whether the file has every tensor in ``names`` (names only: nothing is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return set(names) <= set(f.keys())
    except Exception as exc:
        raise _unreadable(path, exc) from None


def config_differences(recorded: dict[str, Any], cfg: Config) -> list[str]:
    """The config keys on which a checkpoint's recorded config differs from ``cfg``, each as
    ``key (<cfg's value> now, <recorded> in the checkpoint)``; [] when they agree.

    Both sides are compared as JSON values (tuples and lists alike). A key the checkpoint
    predates takes the value runs had before it where that is known
    (:data:`meigm.config.RECORDED_BEFORE`) and is not compared otherwise: its config.yaml
    predates it too, and the run goes on with its default, as it always has."""
    from meigm.config import RECORDED_BEFORE

    now = json.loads(json.dumps(cfg.to_dict()))
    then = {**RECORDED_BEFORE, **json.loads(json.dumps(recorded))}
    return [f"{k} ({now[k]!r} now, {then[k]!r} in the checkpoint)"
            for k in sorted(then) if k in now and now[k] != then[k]]


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` interval checkpoints; returns the deleted."""
    steps = [p for p in list_checkpoints(run_dir) if p.name != FINAL]
    doomed = steps[:-keep] if keep > 0 else steps
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


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
