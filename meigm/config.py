"""Typed, frozen experiment configuration.

A run is fully described by one :class:`Config`: YAML presets and ``key=value``
overrides are parsed into it, every field is type- and range-checked, and the
resolved config (with environment-dependent defaults filled in) is written to the
run directory. Unknown keys, wrong types and out-of-range values raise
:class:`~meigm.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import itertools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meigm.errors import ConfigError

TARGET_UPDATES = ("hard", "polyak")
ALPHA_LOSSES = ("exact", "sampled")
ENTROPY_AGENTS = ("all", "alive")
REPLAY_DTYPES = ("float32", "float16", "bfloat16")
DIVERGENCE = ("stop", "mask")


@dataclass(frozen=True)
class Config:
    """One training run (all seeds of it train together in one compiled program)."""

    # --- what to run
    alg: str = "me_qmix"
    """Algorithm: me_qmix, me_qplex, me_vdn (ME-IGM), qmix, qplex, vdn (ε-greedy baselines),
    fop (FOP, the maximum-entropy actor-critic baseline), mappo, ippo (on-policy PPO),
    hasac (HASAC, the maximum-entropy heterogeneous-agent actor-critic), soft_qmix (the
    authors' released Soft-QMIX code: meigm/learners/soft_qmix.py)."""
    env: str = "matrix:table1"
    """Scenario registry name, ``family:scenario`` (``meigm envs`` lists them)."""
    env_args: dict = field(default_factory=dict)
    """Scenario keyword arguments, e.g. ``{payoff: [[...]]}`` for ``matrix:custom``."""
    seed: int = 0
    """Seed of the first run; seed i of ``seeds`` uses ``seed + i``."""
    seeds: int = 1
    """Number of independent seeds, trained in one vmapped program."""
    t_max: int | None = None
    """Training budget in env steps per seed; None: the scenario's default budget."""

    # --- roll-out and replay (pymarl2 defaults)
    n_envs: int | None = None
    """Parallel environments per seed; one collection = one episode from each. None: 4
    for the replay learners (their batches are sampled from the buffer), 32 for the
    on-policy ones, whose every update uses just the one collection (MAPPO's SMAC batch
    is 8 x 400 = 3,200 steps; 32 SMAX episodes are 600-2,000)."""
    env_workers: int = 0
    """Host environments only (PettingZoo, SMACv2): worker processes stepping the
    ``seeds × n_envs`` copies (it must divide that number); 0 steps them in this process,
    best when a step is cheap (MPE); worth it when a step is slow (StarCraft II).
    Evaluation reuses the same copies. Ignored by JAX environments."""
    buffer_size: int = 5000
    """Replay capacity in episodes (padded to the episode limit)."""
    replay_dtype: str = "float32"
    """How the replay buffer stores observations and states (float32, float16, bfloat16);
    sampled batches are float32 again, so only the stored values are rounded. They are
    nine tenths of a buffer's bytes: the paper's 5,000 episodes of a 20-unit SMAX race
    are 20-22 GiB in float32, 10-11 in float16, which fits a 24 GiB machine. float16 keeps 11
    significant bits (relative error ≤ 2^-11; absolute 3e-8 below 6e-5) up to |x| = 65,504,
    enough for SMAX's features, which are fractions of a sight range, of health, of a
    cooldown, or one-hot; bfloat16 keeps float32's range with 8 bits."""
    batch_size: int = 128
    """Episodes per update; learning starts once the buffer holds this many."""
    updates_per_collect: int = 1
    """Gradient updates after each collection of ``n_envs`` episodes."""
    length_buckets: int | None = None
    """Batch lengths the update is compiled for, evenly spaced up to the episode limit
    (8 on SMAX's 100 steps: 13, 25, 38, ..., 100). Each sampled batch is trimmed to the
    smallest that holds its longest real episode, so an update costs what its episodes
    cost (pymarl2 trims each batch to its longest episode); the result is the same up to
    float reassociation. 1: always the full limit. None: the scenario's setting — 8 on
    SMAX (with ``length_groups`` 8), 1 elsewhere: matrix, MPE and Overcooked episodes
    always run to the limit (benchmarks/notes/length_groups.md)."""
    length_groups: int | None = None
    """Length-sorted groups each sampled batch is split into, each trimmed to its own
    bucket of ``length_buckets`` (1: the batch is trimmed as a whole). One timed-out
    episode keeps a whole batch at the limit; sorted by length, only its group pays for
    it. The gradients of the groups, weighted by their shares of the batch's real steps,
    add up to the whole batch's, so the update is the same up to float reassociation.
    Must divide ``batch_size``; needs a learner whose loss is separable by episode
    (ME-IGM, QMIX/QPLEX/VDN, FOP). None: the scenario's setting (8 on SMAX, for those
    learners; 1 elsewhere and for the others)."""

    # --- optimisation
    lr: float = 1e-3
    """Adam learning rate of the agent network and mixer (FOP's and HASAC's critics)."""
    grad_clip: float = 10.0
    """Global gradient-norm clip."""
    gamma: float = 0.99
    """Discount."""
    td_lambda: float = 0.4
    """λ of the (soft) TD(λ) target (App. A); 0.4 is the paper's SMAC-v2 value."""
    target_update: str = "hard"
    """hard: copy every ``target_update_interval`` episodes (pymarl2); polyak: every update."""
    target_update_interval: int = 200
    """Episodes between hard target refreshes."""
    tau: float = 0.005
    """Polyak rate when ``target_update=polyak``."""

    # --- networks
    hidden_dim: int = 64
    """GRU width of the agent network."""
    mixer: str | None = None
    """Mixer override (vdn, qmix, qplex); None: the algorithm's own. FOP only takes its
    own attention mixer, fop; soft_qmix its own sum of transformed utilities, sum_g."""
    mixing_embed: int = 32
    """QMIX mixing width; FOP: hidden width of its mixer's V(s) (the authors' 32);
    soft_qmix: twice the hidden width of its utility transform g (theirs: 32 // 2)."""
    hypernet_embed: int = 64
    """Hidden width of every hyper-network (mixer and OPT)."""
    qplex_heads: int = 4
    """Attention heads of QPLEX's λ(s, a) (pymarl's default 4), and of FOP's (authors' 4)."""

    # --- ε-greedy baselines
    epsilon_start: float = 1.0
    """Initial ε (qmix, vdn; fop's roll-outs mix their policies with ε-uniform)."""
    epsilon_finish: float = 0.05
    """Final ε."""
    epsilon_anneal_steps: int | None = None
    """Env steps to anneal ε over; None: 5% of t_max (pymarl2 uses 100k of 10M on SMAC)."""

    # --- ME-IGM
    transform: str = "opt"
    """Policy transform: opt (Eq. 2), none (+Entropy ablation), mlp (Table 4 ablation)."""
    opt_layers: int | None = None
    """OPT depth, 1 or 2 (Eq. 2); None: the scenario's paper setting — one layer on the
    SMAC-v2-like SMAX scenarios (App. E), two elsewhere."""
    opt_hidden: int = 32
    """Hidden width H of the two-layer OPT."""
    opt_min_weight: float = 1e-3
    """Floor added to |·| OPT weights so order is kept strictly (spec, open choice)."""
    opt_lr: float | None = None
    """Adam learning rate of the OPT hyper-networks; None: ``lr``."""
    alpha_init: float | None = None
    """Initial temperature α (open choice in the spec); None: 0.03 for soft_qmix (the
    authors' fixed α, which it never learns), else the scenario's setting — 1.0 by
    default, 0.01 on SMAX, whose rewards are normalised to ~2 per episode: with α = 1 the
    entropy bonus (~α·n·log|A| per step) outweighs the reward a hundredfold,
    soft values learn "stay alive to keep acting" and the policies never learn to win
    (benchmarks/notes/learning_smax_issue3.md). With ``learn_alpha`` α then follows its target entropy
    (at ``reward_scale`` 10 it settles at 0.011–0.013 on ``smax:protoss_5_vs_5``)."""
    learn_alpha: bool = True
    """Learn α with Eq. (11); false keeps it at ``alpha_init``. HASAC's temperatures (one
    per agent, one for its critics) use ``alpha_init``, ``learn_alpha``,
    ``target_entropy`` and ``alpha_loss`` in the same way, and ``hasac_alpha_lr``."""
    alpha_lr: float = 0.3
    """Adam learning rate of log α: the paper's printed 0.3 (App. E). Measured on
    ``smax:protoss_5_vs_5`` (benchmarks/notes/temperature.md): with 0.3 or 0.03
    the policy entropy sits on its target from 30k env steps on; with 3e-3 it settles
    30–60% above it, and with 3e-4 (Adam moves log α by ~3e-4 per update) it drifts to
    2.3× the target by 210k steps while α can barely move."""
    target_entropy: float | None = None
    """Per-agent target entropy coefficient: H̄ = target_entropy · n_agents (App. E);
    None: the scenario's setting — the paper's 0.32 for terran and 0.24 on SMAC-v2/SMAX and
    elsewhere; 1.4 on Overcooked, where 0.24 ran α down to ~0 on still-flat values and
    stopped exploration and 0.8 explored too little on asymmetric advantages
    (``meigm/envs/overcooked.py``; benchmarks/notes/overcooked.md, "Overcooked's target
    entropy: 1.4 per agent")."""
    alpha_loss: str = "exact"
    """Eq. (11) expectation: exact (−Σπ log π of each policy) or sampled (batch actions)."""
    entropy_agents: str = "all"
    """Which agents the temperature's target counts, H̄ = target_entropy · (their number):
    ``all`` (App. E: every agent at every step) or ``alive`` (at each step, the agents with
    more than one available action). A dead SMAX unit's only action is no-op, so its entropy
    is 0: with ``all`` the living agents carry the dead ones' share and α rises as units
    die. ``train/entropy`` averages over all agents, ``train/entropy_alive`` over those with
    a choice. The paper does not say (its released code fixes α). The default is ``all``
    (the paper's App. E): measured on terran 5v5 at the verdict protocol (5 seeds against
    7), ``alive`` was not separated from it and, seed by seed, lower (benchmarks/README.md,
    "Which agents the temperature's target counts"; ``benchmarks/presets/entropy_agents.yaml``)."""

    # --- FOP
    actor_lr: float | None = None
    """Adam learning rate of FOP's and HASAC's actors; None: ``lr`` (the critics and mixers always use
    ``lr``; the authors use 5e-4 for both, with RMSprop)."""
    fop_alpha_start: float = 0.5
    """FOP's temperature α at the start of training (authors' code: 0.5)."""
    fop_alpha_finish: float = 0.05
    """FOP's final α (authors' code: 0.05)."""
    fop_alpha_anneal_steps: int = 90_000
    """Env steps over which FOP's α falls linearly from start to finish; the authors'
    ``max(0.05, 0.5 - t_env / 200000)`` reaches 0.05 after 90k steps."""
    fop_epsilon_anneal_steps: int = 50_000
    """Env steps over which the ε of FOP's roll-outs falls linearly from ``epsilon_start``
    to ``epsilon_finish`` (the authors' multinomial selector: 1.0 -> 0.05 over 50k)."""

    # --- HASAC
    share_actor: bool = False
    """HASAC: one actor shared by all agents (told apart by the agent id in their inputs)
    instead of one per agent, the authors' default (``share_param: False``)."""
    critic_hidden: int = 256
    """HASAC: width of both hidden layers of its joint-action critic MLP (authors: 256)."""
    hasac_alpha_lr: float = 3e-3
    """HASAC: Adam learning rate of its log temperatures (the authors' 3e-4 is one override
    away). Its α reach the policies only through the actors' gradient steps, unlike
    ME-IGM's, which scale the policy directly: at ME-IGM's 0.3 they exploded on
    ``smax:3m``; at 3e-4 α could not rise from 0.011 while the actors sat at an entropy of
    0.01–0.03 against a 0.24 target; at 3e-3 the entropy was back near its target by
    120k env steps and the greedy win rate 80% at 300k (benchmarks/notes/hasac.md, "HASAC on smax:3m")."""

    # --- PPO family (mappo, ippo): MAPPO's SMAC(v2) settings (Yu et al. 2022)
    ppo_lr: float = 5e-4
    """Adam learning rate of the actor and of the critic (MAPPO: 5e-4 for both)."""
    ppo_adam_eps: float = 1e-5
    """Adam's ε (MAPPO's ``opti_eps``)."""
    ppo_epochs: int = 5
    """Passes over each collection (MAPPO on SMACv2: 5)."""
    ppo_minibatches: int = 1
    """Minibatches of whole episodes per pass (MAPPO on SMAC: 1); must divide ``n_envs``."""
    ppo_clip: float = 0.2
    """ε of the clipped surrogate and of the value clip."""
    gae_lambda: float = 0.95
    """λ of generalised advantage estimation."""
    entropy_coef: float = 0.01
    """Weight of the policies' entropy bonus."""
    value_loss_coef: float = 1.0
    """Weight of the value loss."""
    huber_delta: float = 10.0
    """δ of the Huber value loss (PPO family) and of HASAC's critic loss (authors: 10)."""
    value_norm: bool = True
    """Normalise the value targets by their running mean and std (MAPPO's ValueNorm)."""

    reward_scale: float | None = None
    """Factor on the learning reward (what the replay or on-policy data stores); returns
    and win rates are always reported in the scenario's own units. None: the scenario's
    setting — 10 on SMAX, whose team return is at most 2 where SMAC's is normalised to
    20 (the scale the paper's and pymarl2's learning rates, α and TD(λ) settings were
    tuned on); 1 elsewhere. Measured on ``smax:protoss_5_vs_5``: QMIX and ME-QMIX reach
    at 75k env steps with 10 the test return they reach at 300–400k with 1
    (benchmarks/notes/reward_scale.md). The PPO family normalises values and
    advantages, so the scale changes it only through float rounding."""

    bootstrap_truncated: bool | None = None
    """Whether targets bootstrap past an episode cut by the time limit (the textbook
    choice: a time limit is not a terminal state) or treat it as terminal. None: the
    scenario's setting — bootstrap everywhere except MPE, whose 25-step episodes are
    always cut, whose observations carry no time and are unbounded: there bootstrapping
    from the cut state lets the mixer's V(s) extrapolate upward along the episode, and
    QMIX's Q_tot diverged to +100 on all-negative rewards (benchmarks/notes/pettingzoo.md);
    JaxMARL's MPE baselines also end the episode there."""

    # --- evaluation and output
    reward_shaping_horizon: int | None = None
    """Env steps over which a scenario's shaping reward (Overcooked's) is annealed
    linearly from weight 1 to 0; 0: never shape; None: the scenario's default (2.5M on
    Overcooked, as in JaxMARL's Overcooked baselines; no shaping elsewhere). Test
    returns never include it."""
    test_interval: int | None = None
    """Env steps between greedy evaluations, counted per seed: evaluation k of every seed
    is at the first iteration at or after k · test_interval of *its own* env steps (a seed
    that gets there first waits, frozen, for the others), the last at t_max, where each
    seed stops; so every seed has the same budget and the same x grid. None: t_max / 20."""
    test_episodes: int = 32
    """Greedy decentralised episodes per evaluation (per seed)."""
    keep_checkpoints: int = 2
    """Interval checkpoints kept (the newest K); older ones are deleted once a newer one is
    safely on disk. Each holds the replay buffer (``meigm train --resume`` needs it)."""
    on_divergence: str = "stop"
    """A non-finite loss, Q-value or parameter in a seed: stop (end the run with a message
    naming it; the last good checkpoint stays) or mask (freeze that seed at its last finite
    state, report it, let the other seeds finish)."""
    checkpoint_interval: int | None = None
    """Env steps between checkpoints, written at the first evaluation point at or after each
    multiple; 0 or None: only the final one. A checkpoint is the whole learner state
    (parameters, target parameters, optimiser state, α) of every seed, so ``meigm eval``
    can re-evaluate a run at any of them and the logged test metrics can be reproduced;
    interval checkpoints also hold the replay buffer, keys and counters, which
    ``meigm train --resume`` continues from exactly."""
    wandb: bool = False
    """Also log metrics to Weights & Biases; needs ``pip install wandb`` and is imported
    only when true (``metrics.jsonl`` and TensorBoard files are always written)."""
    wandb_project: str | None = None
    """Weights & Biases project when ``wandb`` is true; None: ``meigm``."""

    # ------------------------------------------------------------------ derived
    @property
    def resolved_mixer(self) -> str:
        from meigm.learners import ALGORITHMS

        return self.mixer or ALGORITHMS[self.alg][1]

    @property
    def on_policy(self) -> bool:
        """Whether the algorithm learns on-policy (the PPO family, meigm.schemes.OnPolicy)."""
        from meigm.learners import ALGORITHMS

        return ALGORITHMS[self.alg][0].data_scheme == "on_policy"

    @property
    def separable_loss(self) -> bool:
        """Whether the algorithm's loss is separable by episode, so that a batch can be
        updated in length-sorted groups (``length_groups``; meigm.learners.base)."""
        from meigm.learners import ALGORITHMS

        return getattr(ALGORITHMS[self.alg][0], "separable_loss", False)

    @property
    def resolved_epsilon_anneal(self) -> int:
        if self.epsilon_anneal_steps is not None:
            return self.epsilon_anneal_steps
        return max(1, (self.t_max or 0) // 20)

    def resolve(self, default_t_max: int, scenario_defaults: dict[str, Any] | None = None) -> Config:
        """Fill environment-dependent defaults; the result is what a run directory records.

        ``scenario_defaults`` (``EnvSpec.config_defaults``) fill fields the user left at
        None — the paper's per-scenario settings — and the algorithm's own settings (its
        learner's ``config_defaults``: soft_qmix's fixed α) win over them; anything set
        explicitly wins over both.
        """
        from meigm.learners import ALGORITHMS

        t_max = self.t_max or default_t_max
        own = getattr(ALGORITHMS[self.alg][0], "config_defaults", {})
        filled = {k: v for k, v in {**(scenario_defaults or {}), **own}.items()
                  if getattr(self, k) is None}
        if "length_groups" in filled:  # a scenario's grouping, for learners that can group,
            filled["length_groups"] = (  # in groups of equal size
                math.gcd(filled["length_groups"], self.batch_size) if self.separable_loss else 1)
        filled = {**GLOBAL_DEFAULTS, **filled}
        filled = {k: v for k, v in filled.items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, t_max=t_max, **filled)
        return dataclasses.replace(
            cfg,
            n_envs=self.n_envs or (32 if cfg.on_policy else 4),
            mixer=cfg.resolved_mixer,
            epsilon_anneal_steps=cfg.resolved_epsilon_anneal,
            test_interval=self.test_interval or max(1, t_max // 20),
            opt_lr=self.opt_lr if self.opt_lr is not None else self.lr,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Values of the scenario-dependent fields for scenarios that set none.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "opt_layers": 2, "target_entropy": 0.24, "alpha_init": 1.0, "reward_shaping_horizon": 0,
    "bootstrap_truncated": True, "length_buckets": 1, "length_groups": 1, "reward_scale": 1.0,
}

#: Fields added since runs were first recorded, with the value every run written before
#: them used: a run directory whose ``config.yaml`` lacks one resumes, re-evaluates and
#: exports as it was trained (``reward_scale`` came with SMAX's default of 10,
#: ``length_groups`` with the sorted-group update, ``replay_dtype`` with half-width replay).
RECORDED_BEFORE: dict[str, Any] = {"reward_scale": 1.0, "length_groups": 1, "replay_dtype": "float32"}

FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)
_POSITIVE = {
    "seeds", "t_max", "n_envs", "buffer_size", "batch_size", "updates_per_collect", "lr",
    "length_buckets", "length_groups",
    "grad_clip", "target_update_interval", "hidden_dim", "mixing_embed", "hypernet_embed", "qplex_heads",
    "epsilon_anneal_steps", "opt_layers", "opt_hidden", "opt_lr", "alpha_init", "alpha_lr",
    "test_interval", "test_episodes", "actor_lr", "fop_alpha_start", "fop_alpha_finish",
    "fop_alpha_anneal_steps", "fop_epsilon_anneal_steps", "keep_checkpoints",
    "ppo_lr", "ppo_adam_eps", "ppo_epochs", "ppo_minibatches", "ppo_clip", "huber_delta",
    "reward_scale", "critic_hidden", "hasac_alpha_lr",
}
_UNIT = {"gamma", "td_lambda", "tau", "epsilon_start", "epsilon_finish", "gae_lambda"}
#: The compiled program counts env steps, episodes and updates in int32, and every integer
#: field (a budget, an interval, a size) enters it as an int32 constant.
INT32_MAX = 2**31 - 1
#: Seed ``seed + i`` is a 32-bit PRNG seed (``jax.random.PRNGKey``): 2**32 would be seed 0 again.
SEED_MAX = 2**32 - 1


def _type_name(tp: Any) -> str:
    if isinstance(tp, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    return "null" if tp is type(None) else tp.__name__


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    tp = _HINTS[key]
    allowed = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    for t in allowed:
        if t is type(None) and value is None:
            return None
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float | str) and not isinstance(value, bool):
            # YAML 1.1 reads ``1e-3`` (no decimal point) as a string; accept it as a float.
            try:
                number = float(value)
            except (ValueError, OverflowError):
                continue
            if not math.isfinite(number):  # nan/inf would surface later as "training diverged"
                raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
            return number
        if t in (str, dict) and isinstance(value, t):
            return value
    raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}")


def _check_choices(cfg: Config) -> None:
    from meigm.learners import ALGORITHMS
    from meigm.networks.mixers import MIXERS
    from meigm.networks.opt import TRANSFORMS

    choices = {
        "alg": (cfg.alg, tuple(ALGORITHMS)),
        "transform": (cfg.transform, TRANSFORMS),
        "target_update": (cfg.target_update, TARGET_UPDATES),
        "alpha_loss": (cfg.alpha_loss, ALPHA_LOSSES),
        "entropy_agents": (cfg.entropy_agents, ENTROPY_AGENTS),
        "replay_dtype": (cfg.replay_dtype, REPLAY_DTYPES),
        "on_divergence": (cfg.on_divergence, DIVERGENCE),
    }
    if cfg.mixer is not None and cfg.alg in ALGORITHMS and ALGORITHMS[cfg.alg][1] is None:
        raise ConfigError(f"{cfg.alg} has no mixer; leave 'mixer' unset")
    if cfg.mixer is not None:
        # FOP's attention mixer belongs to FOP alone; the other algorithms take any IGM mixer.
        own = ALGORITHMS.get(cfg.alg, (None, None))[1]
        choices["mixer"] = (cfg.mixer, MIXERS if own in MIXERS else (own,))
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            label = "algorithm" if key == "alg" else f"{key}"
            raise ConfigError(f"unknown {label} {value!r}; allowed: {', '.join(allowed)}")
    for key in _POSITIVE:
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"config key {key!r} must be positive, got {value!r}")
    if cfg.seed < 0:
        raise ConfigError(f"config key 'seed' must be >= 0 (the first seed), got {cfg.seed}")
    _check_int_range(cfg)
    for key in _UNIT:
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"config key {key!r} must be in [0, 1], got {value!r}")
    if cfg.opt_layers not in (None, 1, 2):
        raise ConfigError(f"config key 'opt_layers' must be 1 or 2, got {cfg.opt_layers}")
    if cfg.reward_shaping_horizon is not None and cfg.reward_shaping_horizon < 0:
        raise ConfigError("config key 'reward_shaping_horizon' must be >= 0 (0: no shaping), "
                          f"got {cfg.reward_shaping_horizon}")
    if cfg.env_workers < 0:
        raise ConfigError(f"config key 'env_workers' must be >= 0 (0: in this process), "
                          f"got {cfg.env_workers}")
    if cfg.checkpoint_interval is not None and cfg.checkpoint_interval < 0:
        raise ConfigError("config key 'checkpoint_interval' must be >= 0 (0: only at the end), "
                          f"got {cfg.checkpoint_interval}")
    for key in ("entropy_coef", "value_loss_coef"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)!r}")
    if cfg.n_envs is not None and cfg.n_envs % cfg.ppo_minibatches and cfg.on_policy:
        raise ConfigError(f"ppo_minibatches ({cfg.ppo_minibatches}) must divide n_envs "
                          f"({cfg.n_envs}): each minibatch holds whole episodes")
    # the replay buffer's sizes bind replay learners only; the PPO family has no buffer
    if cfg.n_envs is not None and cfg.n_envs > cfg.buffer_size and not cfg.on_policy:
        raise ConfigError(f"n_envs ({cfg.n_envs}) cannot exceed buffer_size ({cfg.buffer_size})")
    if cfg.batch_size > cfg.buffer_size and not cfg.on_policy:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) cannot exceed buffer_size ({cfg.buffer_size})"
        )
    if cfg.length_groups is not None and cfg.batch_size % cfg.length_groups:
        raise ConfigError(f"length_groups ({cfg.length_groups}) must divide batch_size "
                          f"({cfg.batch_size}): every group holds the same number of episodes")


def _check_int_range(cfg: Config) -> None:
    """Every integer must fit the counters the program holds it in (int32; the seeds:
    uint32), checked here so that an out-of-range value is one line before anything is
    compiled or written, not an ``OverflowError`` from inside JAX."""
    for key in FIELDS:
        value = getattr(cfg, key)
        if key == "seed" or isinstance(value, bool) or not isinstance(value, int):
            continue
        if value > INT32_MAX:
            raise ConfigError(f"config key {key!r} must be at most {INT32_MAX} (the program counts "
                              f"in int32), got {value}")
    if cfg.seed + cfg.seeds - 1 > SEED_MAX:
        raise ConfigError(f"config key 'seed' must be at most {SEED_MAX - cfg.seeds + 1} with "
                          f"seeds={cfg.seeds} (seed + i is a 32-bit PRNG seed), got {cfg.seed}")


def check_counters(cfg: Config, steps_per_collection: int) -> None:
    """A resolved config's budget must leave room for the collection that crosses it: a
    seed ends with fewer than ``t_max + steps_per_collection`` env steps (``n_envs`` x the
    scenario's episode limit), and that must fit in int32 too."""
    room = INT32_MAX - steps_per_collection + 1
    if cfg.t_max is not None and cfg.t_max > room:
        raise ConfigError(f"config key 't_max' must be at most {room} on this scenario with "
                          f"n_envs={cfg.n_envs} (the last collection may overshoot it by "
                          f"{steps_per_collection - 1} env steps, counted in int32), got {cfg.t_max}")


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}.{hint} Valid keys: {', '.join(FIELDS)}")


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """Validated config from a plain dict laid over ``base`` (defaults if None)."""
    base = base or Config()
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise _unknown_key(key)
        updates[key] = _coerce(key, value)
    cfg = dataclasses.replace(base, **updates)
    _check_choices(cfg)
    return cfg


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML keeps the last one without a word)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated within one mapping: in a sweep
    preset two algorithms under one label would otherwise silently become one run."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    where = (f"line {line}" if seen[key] == line
                             else f"lines {seen[key]} and {line}")
                    raise DuplicateKeyError(f"key {key!r} appears twice ({where}); each key may "
                                            "be given once")
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` for a repeated key."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path, what: str = "preset") -> dict[str, Any]:
    """A YAML file of config keys (a preset, or a run's ``config.yaml``) as a dict;
    missing or malformed files are user errors naming ``what`` the file is."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        data = safe_load_unique(p.read_text())
    except DuplicateKeyError as exc:
        raise ConfigError(f"{what} {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p} must be a mapping of config keys, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict; values are YAML scalars/lists, ``a.b=v`` nests into dicts."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = safe_load_unique(raw) if raw != "" else ""
        except DuplicateKeyError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from None
        except yaml.YAMLError:
            value = raw
        head, *rest = key.split(".")
        if rest:
            if head not in FIELDS or _HINTS[head] is not dict:
                raise ConfigError(f"override {key!r}: only dict keys (env_args) take a dotted path")
            node = out.setdefault(head, {})
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
        else:
            out[key] = value
    return out


@functools.cache
def field_docs() -> dict[str, str]:
    """Each :class:`Config` field's docstring (the string literal under it in this file),
    one line: what ``meigm config`` prints beside the value."""
    tree = ast.parse(Path(__file__).read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config").body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def value_sources(preset: str | Path | None = None, overrides: list[str] | None = None,
                  **fields: Any) -> dict[str, str]:
    """Where :func:`build` took each explicitly set field from (same arguments): the
    preset file, a command-line option, or a ``key=value`` override (the last wins)."""
    sources = {k: f"preset {preset}" for k in (load_yaml(preset) if preset else {})}
    sources.update({k: f"--{k}" for k, v in fields.items() if v is not None})
    sources.update({k: "override" for k in parse_overrides(overrides or [])})
    return sources


def build(preset: str | Path | None = None, overrides: list[str] | None = None,
          **fields: Any) -> Config:
    """Config from (optional) preset file, then explicit fields, then ``key=value`` overrides."""
    values: dict[str, Any] = load_yaml(preset) if preset else {}
    values.update({k: v for k, v in fields.items() if v is not None})
    for key, value in parse_overrides(overrides or []).items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return from_dict(values)
