"""Export a trained team for deployment without JAX or meigm (``meigm export``).

``export_run(run_dir, "team.npz")`` writes two files:

* ``team.npz`` — the agent network of one seed (float32 weights) and metadata, in the
  format described by :mod:`meigm.numpy_policy` (a NumPy archive: no pickle);
* ``team_policy.py`` — a copy of :mod:`meigm.numpy_policy`, the NumPy reference
  implementation of meigm's decentralised greedy execution, which imports only NumPy.

Only the agent network is exported: decentralised execution needs nothing else (the
mixer, the critics and α are training-time only). For FOP, MAPPO, IPPO and HASAC the
agent network is the actor, and the greedy action is the argmax of its logits, as in
``meigm eval``; HASAC's actors are one per agent, exported with a leading agent axis on
every weight.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import meigm
from meigm import numpy_policy
from meigm.errors import MeigmError
from meigm.experiments.checkpoint import read_metadata

#: Checkpoint tensors of one seed's agent network -> names in the export.
_AGENT_PREFIX = "params/agent/params/"
_TENSORS = {
    "fc1/kernel": "fc1.kernel", "fc1/bias": "fc1.bias",
    "gru_in/kernel": "gru_in.kernel", "gru_in/bias": "gru_in.bias",
    "gru_hidden/kernel": "gru_hidden.kernel", "gru_hn_bias": "gru_hn_bias",
    "fc2/kernel": "fc2.kernel", "fc2/bias": "fc2.bias",
}


def _check_out(out: Path, force: bool) -> None:
    if out.suffix != ".npz":
        raise MeigmError(f"output must be a .npz file, got {out}")
    if out.parent.exists() and not out.parent.is_dir():
        raise MeigmError(f"output directory {out.parent} is a file, not a directory")
    if not out.parent.is_dir():
        raise MeigmError(f"output directory {out.parent} does not exist")
    if out.is_dir():
        raise MeigmError(f"output {out} is a directory")
    existing = [p for p in (out, policy_module_path(out)) if p.exists()]
    if existing and not force:
        raise MeigmError(f"{' and '.join(str(p) for p in existing)} already exist"
                         f"{'s' if len(existing) == 1 else ''}; pass --force to overwrite "
                         "(nothing was written)")


def _agent_tensors(path: Path, meta: dict[str, Any], seed_index: int) -> dict[str, np.ndarray]:
    """The agent network of seed ``seed_index`` from a checkpoint, as export names -> float32;
    each tensor is checked against its recorded checksum (where the file has one)."""
    from safetensors import safe_open

    from meigm.experiments.checkpoint import tensor_digest

    digests = meta.get("sha256") or {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            found = set(f.keys())
            missing = [_AGENT_PREFIX + k for k in _TENSORS if _AGENT_PREFIX + k not in found]
            if missing:
                raise MeigmError(f"checkpoint {path} has no agent network tensor {missing[0]!r} "
                                 f"(not a meigm agent checkpoint?)")
            weights = {}
            for name, out in _TENSORS.items():
                full = _AGENT_PREFIX + name
                arr = f.get_tensor(full)
                if full in digests and tensor_digest(arr) != digests[full]:
                    raise MeigmError(f"checkpoint {path} is corrupt: tensor {full!r} does not "
                                     "match its checksum")
                weights[out] = np.ascontiguousarray(arr[seed_index], dtype=np.float32)
            return weights
    except MeigmError:
        raise
    except Exception as exc:  # safetensors' own error types for a corrupt file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MeigmError(f"cannot read checkpoint {path}: {reason}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and a rename: never a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise MeigmError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def policy_module_path(out: str | Path) -> Path:
    """Where the reference implementation goes next to ``out``: ``<stem>_policy.py``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_policy.py")


def export_run(run_dir: str | Path, out: str | Path, seed_index: int = 0,
               checkpoint: str | Path | None = None, force: bool = False) -> Path:
    """Write seed ``seed_index``'s agent network of a run to ``out`` (.npz) and
    :mod:`meigm.numpy_policy` to ``<out stem>_policy.py``; returns ``out``.

    ``checkpoint``: a file, or its name under ``<run_dir>/checkpoints``; default the
    newest (``final.safetensors`` once training finished). User errors (missing run,
    config or checkpoint, a seed index out of range, a missing output directory, an
    existing output without ``force``) raise
    :class:`~meigm.errors.MeigmError` before anything is written.
    """
    from meigm.envs import make_env
    from meigm.experiments.evaluate import load_config, resolve_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    cfg = load_config(run_dir)
    _check_out(out, force)
    path = resolve_checkpoint(run_dir, checkpoint)
    meta = read_metadata(path)
    seeds = list(meta["seeds"])
    if not isinstance(seed_index, int) or not 0 <= seed_index < len(seeds):
        raise MeigmError(f"seed index must be in [0, {len(seeds) - 1}] for this run "
                         f"(seeds {seeds}), got {seed_index}")
    if meta["alg"] != cfg.alg or meta["env"] != cfg.env:
        raise MeigmError(f"checkpoint {path} belongs to another run ({meta['alg']} on "
                         f"{meta['env']}); this run is {cfg.alg} on {cfg.env}")
    spec = make_env(cfg.env, cfg.env_args).spec
    weights = _agent_tensors(path, meta, seed_index)
    hidden_dim = int(weights["fc1.bias"].shape[-1])
    t_env = meta.get("t_env") or []
    fields: dict[str, Any] = {
        "format": numpy_policy.FORMAT,
        "meigm_version": meigm.__version__,
        "alg": cfg.alg,
        "env": cfg.env,
        "seed": int(seeds[seed_index]),
        "n_agents": spec.n_agents,
        "n_actions": spec.n_actions,
        "obs_dim": spec.obs_dim,
        "hidden_dim": hidden_dim,
        "t_env": int(t_env[seed_index]) if len(t_env) > seed_index else -1,
        "checkpoint": path.name,
    }
    try:  # the same checks the NumPy side makes on load, so a bad export is never written
        numpy_policy.Policy(weights, fields)
    except numpy_policy.PolicyFileError as exc:
        raise MeigmError(f"checkpoint {path} does not fit {cfg.env}: {exc}") from None
    arrays: dict[str, np.ndarray] = {
        **{k: np.asarray(v) for k, v in fields.items()},
        "agents": np.asarray(list(spec.agents) or [f"agent_{i}" for i in range(spec.n_agents)]),
        "env_args": np.asarray(json.dumps(cfg.env_args, sort_keys=True)),
        **weights,
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    source = Path(numpy_policy.__file__).read_bytes()
    _write_atomic(policy_module_path(out), source)
    _write_atomic(out, buf.getvalue())
    return out
