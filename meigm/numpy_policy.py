"""A trained meigm team as plain NumPy: decentralised greedy execution, no JAX, no meigm.

``meigm export RUN_DIR team.npz`` writes the agent network of one seed to ``team.npz``
and a copy of this file next to it as ``team_policy.py``. This module imports only
NumPy and the standard library, so those two files are all a deployment needs::

    import numpy as np
    from team_policy import Policy

    policy = Policy.load("team.npz")   # checks the file's format string
    policy.reset()                     # at the start of every episode
    while not done:
        actions = policy.act(obs, avail)   # obs [N, O] float, avail [N, A] bool or None
        obs, avail, done = my_env.step(actions)   # actions [N] int64, agent order as trained

It is the reference implementation of what meigm's greedy evaluation does each step:

* inputs per agent ``i``: ``obs_i ⊕ onehot(i) ⊕ onehot(last action of i)`` (the last
  action is all zeros at the first step) — ``meigm.networks.agent.agent_inputs``;
* the agent network (``meigm.networks.agent.RNNAgent``), shared by all agents, or
  one per agent (HASAC), whose every weight then has a leading axis of ``n_agents``
  and agent ``i`` uses slice ``i``::

      x  = relu(inputs @ fc1.kernel + fc1.bias)
      xr, xz, xn = split3(x @ gru_in.kernel + gru_in.bias)
      hr, hz, hn = split3(h @ gru_hidden.kernel)
      r = sigmoid(xr + hr);  z = sigmoid(xz + hz)
      n = tanh(xn + r * (hn + gru_hn_bias))
      h' = (1 - z) * n + z * h
      q  = h' @ fc2.kernel + fc2.bias       # Q_i(τ_i, ·), or an actor's policy logits

* the action: ``argmax`` of ``q`` over the *available* actions (``meigm.ops.masked_argmax``):
  unavailable actions get the value ``-1e10``, ties go to the lowest index, and an agent
  with no available action at all gets action 0.

Everything is computed in float32, like meigm's XLA program; the Q-values agree with it
to float32 rounding (about 1e-6 relative), so actions agree except at exact near-ties.
The observations must be built as meigm's environment builds them (same features, same
agent order: the ``agents`` entry of the file).

Errors: :meth:`Policy.load` raises ``FileNotFoundError`` for a missing file and
:class:`PolicyFileError` (a ``ValueError``) for a file that is truncated, corrupt, not
an export of this format, or internally inconsistent; :meth:`Policy.act` raises
``ValueError`` for inputs of the wrong shape. (This module cannot raise meigm's own
error types: it must not import meigm.)

The file is a NumPy ``.npz`` archive read with ``allow_pickle=False``: nothing in it is
executed on load. Its entries: the weights (``fc1.kernel`` [O+N+A, H], ``fc1.bias`` [H],
``gru_in.kernel`` [H, 3H], ``gru_in.bias`` [3H], ``gru_hidden.kernel`` [H, 3H],
``gru_hn_bias`` [H], ``fc2.kernel`` [H, A], ``fc2.bias`` [A], all float32) and metadata
(``format``, ``meigm_version``, ``alg``, ``env``, ``env_args`` (JSON), ``seed``,
``n_agents``, ``n_actions``, ``obs_dim``, ``hidden_dim``, ``agents``, ``t_env`` (the
seed's env steps at the checkpoint), ``checkpoint`` (its file name)).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The format string an export carries; :meth:`Policy.load` refuses anything else.
FORMAT = "meigm-numpy-policy/1"
#: The weight entries of an export, in the order of the network.
WEIGHTS = ("fc1.kernel", "fc1.bias", "gru_in.kernel", "gru_in.bias", "gru_hidden.kernel",
           "gru_hn_bias", "fc2.kernel", "fc2.bias")
#: Value given to unavailable actions before the argmax (meigm.ops.policy.MASKED_LOGIT).
MASKED_VALUE = np.float32(-1e10)

_INT_META = ("seed", "n_agents", "n_actions", "obs_dim", "hidden_dim", "t_env")
_STR_META = ("format", "meigm_version", "alg", "env", "checkpoint")


class PolicyFileError(ValueError):
    """A policy file that cannot be used: truncated, corrupt, another format, bad shapes."""


def agent_inputs(obs: np.ndarray, last_action_onehot: np.ndarray) -> np.ndarray:
    """obs [..., N, O], last action one-hot [..., N, A] -> inputs [..., N, O + N + A] float32."""
    obs = np.asarray(obs, np.float32)
    n_agents = obs.shape[-2]
    agent_id = np.broadcast_to(np.eye(n_agents, dtype=np.float32), (*obs.shape[:-1], n_agents))
    last = np.asarray(last_action_onehot, np.float32)
    return np.concatenate([obs, agent_id, last], axis=-1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float32 without overflow warnings for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def _dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x [..., N, I] times a shared kernel [I, O] or one kernel per agent [N, I, O]."""
    y = np.einsum("...ni,nio->...no", x, kernel) if kernel.ndim == 3 else x @ kernel
    return y if bias is None else y + bias


def rnn_step(weights: dict[str, np.ndarray], hidden: np.ndarray,
             inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the agent network: hidden [..., N, H], inputs [..., N, I] ->
    (hidden' [..., N, H], q [..., N, A]); weights shared, or per agent (leading axis N)."""
    w = weights
    hidden = np.asarray(hidden, np.float32)
    x = np.maximum(_dense(np.asarray(inputs, np.float32), w["fc1.kernel"], w["fc1.bias"]),
                   np.float32(0))
    xr, xz, xn = np.split(_dense(x, w["gru_in.kernel"], w["gru_in.bias"]), 3, axis=-1)
    hr, hz, hn = np.split(_dense(hidden, w["gru_hidden.kernel"]), 3, axis=-1)
    r = _sigmoid(xr + hr)
    z = _sigmoid(xz + hz)
    n = np.tanh(xn + r * (hn + w["gru_hn_bias"]))
    new_hidden = ((np.float32(1) - z) * n + z * hidden).astype(np.float32)
    q = _dense(new_hidden, w["fc2.kernel"], w["fc2.bias"]).astype(np.float32)
    return new_hidden, q


def masked_argmax(values: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
    """Greedy action among available ones: [..., A], [..., A] bool or None -> [...] int64.

    Unavailable actions count as -1e10; ties (and an all-unavailable row) go to the
    lowest index, as in ``jnp.argmax``.
    """
    values = np.asarray(values, np.float32)
    if avail is not None:
        values = np.where(np.asarray(avail, bool), values, MASKED_VALUE)
    return np.argmax(values, axis=-1).astype(np.int64)


@dataclass
class Policy:
    """The team's greedy decentralised policy with its recurrent state.

    ``weights``: the arrays of :data:`WEIGHTS`; ``meta``: the file's metadata.
    ``hidden`` [N, H] and ``last_action`` [N] (-1: none yet) are the per-agent memory,
    ``last_q`` [N, A] the network's output at the latest :meth:`act`.
    """

    weights: dict[str, np.ndarray]
    meta: dict[str, Any]
    hidden: np.ndarray = field(init=False)
    last_action: np.ndarray = field(init=False)
    last_q: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.weights = {k: np.asarray(v, np.float32) for k, v in self.weights.items()}
        _check_shapes(self.weights, self.meta, "weights")
        self.reset()

    @property
    def n_agents(self) -> int:
        return int(self.meta["n_agents"])

    @property
    def n_actions(self) -> int:
        return int(self.meta["n_actions"])

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obs_dim"])

    @property
    def hidden_dim(self) -> int:
        return int(self.meta["hidden_dim"])

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read an export written by ``meigm export``; see the module docstring for errors."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"policy file not found: {path}")
        try:
            data = np.load(path, allow_pickle=False)
            if not hasattr(data, "files"):  # a bare .npy array
                raise PolicyFileError(f"{path} is not a meigm policy export (not an .npz archive)")
            with data:  # read every entry now: a truncated archive fails here, not later
                arrays = {name: data[name] for name in data.files}
        except PolicyFileError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PolicyFileError(f"cannot read policy file {path}: {reason} "
                                  f"(truncated or not a meigm export?)") from None
        if "format" not in arrays:
            raise PolicyFileError(f"{path} is not a meigm policy export (no 'format' entry)")
        found = str(arrays["format"])
        if found != FORMAT:
            raise PolicyFileError(f"{path} has format {found!r}; this code reads {FORMAT!r}")
        missing = [k for k in (*WEIGHTS, *_INT_META, *_STR_META, "agents") if k not in arrays]
        if missing:
            raise PolicyFileError(f"policy file {path} lacks entries {missing}")
        try:
            meta: dict[str, Any] = {k: str(arrays[k]) for k in _STR_META}
            meta.update({k: int(arrays[k]) for k in _INT_META})
            meta["agents"] = [str(a) for a in np.atleast_1d(arrays["agents"])]
            weights = {k: np.asarray(arrays[k], np.float32) for k in WEIGHTS}
        except (TypeError, ValueError) as exc:
            raise PolicyFileError(f"policy file {path} has a malformed entry: {exc}") from None
        _check_shapes(weights, meta, str(path))
        return cls(weights, meta)

    def reset(self) -> None:
        """Start of an episode: zero hidden state [N, H], no last action."""
        self.hidden = np.zeros((self.n_agents, self.hidden_dim), np.float32)
        self.last_action = np.full((self.n_agents,), -1, np.int64)
        self.last_q = None

    def act(self, obs: np.ndarray, avail: np.ndarray | None = None) -> np.ndarray:
        """obs [N, O], avail [N, A] (bool, or None: all available) -> actions [N] int64.

        Advances the hidden state and remembers the actions as the next step's last action.
        """
        obs = np.asarray(obs, np.float32)
        n, o, a = self.n_agents, self.obs_dim, self.n_actions
        if obs.shape != (n, o):
            raise ValueError(f"obs must have shape [n_agents, obs_dim] = {[n, o]}, got {list(obs.shape)}")
        if avail is not None:
            avail = np.asarray(avail)
            if avail.shape != (n, a):
                raise ValueError(f"avail must have shape [n_agents, n_actions] = {[n, a]}, "
                                 f"got {list(avail.shape)}")
            avail = avail.astype(bool)
        last = np.zeros((n, a), np.float32)
        has_last = self.last_action >= 0
        last[np.arange(n)[has_last], self.last_action[has_last]] = 1.0
        self.hidden, q = rnn_step(self.weights, self.hidden, agent_inputs(obs, last))
        actions = masked_argmax(q, avail)
        self.last_q = q
        self.last_action = actions
        return actions.copy()


def _check_shapes(weights: dict[str, np.ndarray], meta: dict[str, Any], where: str) -> None:
    """Every weight's shape against n_agents, n_actions, obs_dim and hidden_dim."""
    try:
        n, a, o, h = (int(meta[k]) for k in ("n_agents", "n_actions", "obs_dim", "hidden_dim"))
    except (KeyError, TypeError, ValueError):
        raise PolicyFileError(f"{where}: metadata needs integer n_agents, n_actions, obs_dim, "
                              f"hidden_dim") from None
    expected = {
        "fc1.kernel": (o + n + a, h), "fc1.bias": (h,), "gru_in.kernel": (h, 3 * h),
        "gru_in.bias": (3 * h,), "gru_hidden.kernel": (h, 3 * h), "gru_hn_bias": (h,),
        "fc2.kernel": (h, a), "fc2.bias": (a,),
    }
    missing = [name for name in expected if name not in weights]
    if missing:
        raise PolicyFileError(f"{where}: weight {missing[0]!r} is missing")
    # one network for all agents, or one per agent (HASAC): every weight then has a
    # leading agent axis of n_agents
    per_agent = np.ndim(weights["fc1.bias"]) == 2
    for name, shape in expected.items():
        shape = (n, *shape) if per_agent else shape
        got = tuple(np.shape(weights[name]))
        if got != shape:
            raise PolicyFileError(f"{where}: weight {name!r} has shape {list(got)}, expected "
                                  f"{list(shape)} (n_agents={n}, n_actions={a}, obs_dim={o}, "
                                  f"hidden_dim={h})")
