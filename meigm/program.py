"""The one compiled training program.

``make_program(cfg)`` is the one way from a config to a runnable program (environment,
resolved config, learner, trainer); ``make_train(cfg, env, learner)`` returns the
trainer's pure functions. The hot path is

    state = init_seeds(trainer.init, seed_keys)                 # one state per seed, stacked
    run, evaluate = compiled(trainer)                           # jit(vmap(·)) over seeds
    state, metrics = run(state, eval_target(cfg, k))            # up to evaluation point k

where one iteration collects ``n_envs`` whole episodes with the learner's exploration
policy and hands them to the learner family's data scheme (:mod:`meigm.schemes`): the
replay learners store them, run ``updates_per_collect`` updates on sampled batches once
the buffer holds ``batch_size`` episodes and refresh their target networks; on-policy
learners update on the collection itself. Nothing leaves the device inside a chunk; the
host only sees per-chunk metrics (progress bar, logs, evaluation).

**Budgets and evaluation points are per seed.** A chunk runs each seed, iteration by
iteration, until *its own* env-step count reaches the chunk's target
(:func:`eval_target`: the next multiple of ``test_interval``, capped at ``t_max``); a
seed that is there is frozen — no collection, no update, its key unchanged — while the
others go on. So evaluation point ``k`` of every seed is at the first iteration at or
after ``k · test_interval`` of that seed's env steps, every seed ends with env steps in
``[t_max, t_max + n_envs · episode_limit)``, and a seed trains exactly as it would alone,
whatever the episode lengths of the seeds beside it. (Under ``vmap`` the frozen seeds'
work is still computed and discarded: the price of one program for all seeds.)

**Updates cost what the episodes cost.** Each sampled replay batch is trimmed to the
smallest of ``length_buckets`` lengths that holds its longest real episode (pymarl2
trims to the longest) before the update; one compiled update per bucket is chosen with
``lax.switch``, so nothing recompiles (:func:`meigm.schemes.bucketed_update`). With
``length_groups`` > 1 the batch is first sorted by episode length and split into that
many groups, each trimmed to its own bucket, their gradients summed before one
optimiser step: one timed-out episode then costs its group, not the whole batch. The
bucket is the largest any seed needs (a ``pmax`` over the vmapped seed axis
:data:`~meigm.types.SEEDS`): a per-seed choice would turn the switch into a select
that computes every bucket.

Each seed has its own initialisation and key stream: ``init`` splits the seed's key
and never uses a fixed key, so vmapped seeds are independent (tested).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from meigm.config import Config, check_counters
from meigm.envs import Env, make_env
from meigm.envs.host import HostEnv, HostVecEnv
from meigm.errors import ConfigError
from meigm.lanes import Hyper, bind, check_variants, hyper_of, stack_hyper
from meigm.learners import Learner, make_learner
from meigm.rollout import greedy_act, rollout
from meigm.rollout.buffer import empty_episodes, length_buckets
from meigm.rollout.collect import EpisodeStats
from meigm.rollout.host import host_rollout, make_policy_step
from meigm.schemes import DataScheme, make_scheme
from meigm.types import SEEDS, Episodes, LearnerState, seed_max


@struct.dataclass
class TrainState:
    learner: LearnerState
    #: the learner family's data-scheme state (:mod:`meigm.schemes`): the replay buffer
    #: and the last target refresh for the replay learners, nothing for on-policy ones
    data: Any
    key: jax.Array
    t_env: jax.Array  # [] env steps collected (real steps only)
    episodes: jax.Array  # [] episodes collected
    updates: jax.Array  # [] gradient updates done
    #: this lane's hyper-parameters, {lane field: []} (:mod:`meigm.lanes`): config, not
    #: state — never checkpointed, set from the run's config when a state is built
    #: (:func:`init_seeds`) or restored (``meigm.experiments.run.start_loops``)
    hyper: dict[str, jax.Array] = struct.field(default_factory=dict)


def eval_target(cfg: Config, index: int) -> int:
    """Env steps every seed trains to before evaluation point ``index`` (0-based): the
    ``index + 1``-th multiple of ``test_interval``, capped at ``t_max``."""
    return min((index + 1) * cfg.test_interval, cfg.t_max)


@dataclass(frozen=True)
class Trainer:
    """Pure functions of one seed; vmap (over :data:`SEEDS`) and jit them with
    :func:`compiled`."""

    init: Callable[[jax.Array], TrainState]
    #: how the learner family uses its episodes (replay or on-policy), see meigm.schemes
    scheme: DataScheme
    #: (state, t_target [] int) -> (state, chunk summary): iterate until the seed has
    #: ``t_env >= t_target`` (no iteration if it already has).
    run: Callable[[TrainState, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
    evaluate: Callable[[dict, jax.Array], dict[str, jax.Array]]
    steps_per_iter_max: int
    #: the trimmed lengths the update is compiled for (the last is the episode limit)
    buckets: tuple[int, ...]
    #: True for host environments: ``run``/``evaluate`` already take stacked seeds and
    #: must not be jitted or vmapped again (see :func:`compiled`).
    batched: bool = False
    #: releases the host environments (a no-op for JAX environments).
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Program:
    """What one config runs: the config resolved against its scenario, the environment,
    the learner and the trainer built from them (:func:`make_program`).

    A packed program (``make_program(cfg, variants=...)``) trains several variants that
    differ only in lane fields (:mod:`meigm.lanes`): its lanes are variant ``l``'s seeds
    ``cfg.seeds · l .. cfg.seeds · (l + 1) - 1``, each with the variant's hyper-parameters
    and keys (:meth:`lane_hyper`, :meth:`lane_keys`)."""

    cfg: Config
    env: Env | HostEnv
    learner: Learner
    trainer: Trainer
    #: the resolved variants, one per group of ``cfg.seeds`` lanes; ``cfg`` is the first
    variants: tuple[Config, ...] = ()

    @property
    def members(self) -> tuple[Config, ...]:
        """The variants trained, in lane order (the program's own config when unpacked)."""
        return self.variants or (self.cfg,)

    @property
    def lanes(self) -> int:
        """Lanes of the compiled program: variants × seeds."""
        return len(self.members) * self.cfg.seeds

    def lane_keys(self) -> jax.Array:
        """[lanes, 2]: variant ``v``'s seed ``i`` uses ``PRNGKey(v.seed + i)``, as alone."""
        return jnp.concatenate([seed_keys(v) for v in self.members])

    def lane_hyper(self) -> dict[str, np.ndarray]:
        """{lane field: [lanes]}: each lane's hyper-parameters (:mod:`meigm.lanes`)."""
        return stack_hyper(self.members, self.cfg.seeds)


def resolve_config(cfg: Config, env: Env | HostEnv | None = None) -> tuple[Config, Env | HostEnv]:
    """``cfg`` with every scenario-dependent default filled in, and its environment
    (``cfg.env`` from the registry unless ``env`` is given). A no-op on a resolved config."""
    env = make_env(cfg.env, cfg.env_args) if env is None else env
    cfg = cfg.resolve(env.spec.default_t_max, dict(env.spec.config_defaults))
    check_counters(cfg, cfg.n_envs * env.spec.episode_limit)
    return cfg, env


def make_program(cfg: Config, env: Env | HostEnv | None = None,
                 variants: Sequence[Config] = ()) -> Program:
    """The one way from a config to a runnable program: environment, resolved config,
    learner, trainer. ``env`` replaces the registry's scenario (a custom environment);
    the config's ``env`` name is then only a label.

    ``variants``: further configs to train as lanes of this one program after ``cfg``
    (the program's first variant); they may differ from it only in lane fields and ``seed``
    (:func:`meigm.lanes.check_variants` refuses anything else in one line)."""
    cfg, env = resolve_config(cfg, env)
    packed: tuple[Config, ...] = ()
    if variants:
        packed = (cfg, *(resolve_config(v, env)[0] for v in variants))
        check_variants(packed)
        if isinstance(env, HostEnv):
            raise ConfigError(f"{cfg.env} steps on the host: its programs cannot pack variants "
                              "(train each variant as its own run)")
    learner = make_learner(cfg, env.spec)
    return Program(cfg=cfg, env=env, learner=learner, trainer=make_train(cfg, env, learner),
                   variants=packed)


def shaping_coef(t_env: jax.Array, horizon: int | None) -> jax.Array:
    """Weight of the scenario's shaping reward (``TimeStep.shaped``) in the learning reward.

    Linear from 1 at ``t_env = 0`` to 0 at ``horizon`` env steps, 0 after; ``horizon`` 0 or
    None: never shape. Counted in env steps, not updates, so a horizon means the same
    whatever ``n_envs`` or ``updates_per_collect``. The shaping is only there to get
    exploration started; once it is annealed away the agents optimise the scenario's own
    reward, which is what evaluation measures.

    t_env [] int (a seed's env-step counter) -> [] float32.
    """
    if not horizon or horizon <= 0:
        return jnp.zeros((), jnp.float32)
    return jnp.clip(1.0 - t_env / horizon, 0.0, 1.0).astype(jnp.float32)


def last_step(mask: jax.Array) -> jax.Array:
    """[E, T] real-step mask -> [E, T] bool, true at each episode's last real step."""
    mask = mask.astype(bool)
    after = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    return mask & ~after


def make_train(cfg: Config, env: Env | HostEnv, learner: Learner) -> Trainer:
    """Build the training program for a *resolved* config (see :meth:`Config.resolve`)."""
    spec = env.spec
    steps_per_iter_max = cfg.n_envs * spec.episode_limit
    buckets = length_buckets(spec.episode_limit, cfg.length_buckets)
    scheme = make_scheme(cfg, spec, learner, buckets)

    def lane(hyper: Hyper) -> tuple[Learner, DataScheme]:
        """The learner and data scheme of one lane, built (inside the trace) from the config
        bound to the lane's hyper-parameters :mod:`meigm.lanes`; ``learner`` and ``scheme``
        above serve what no lane changes (shapes, the agent network, evaluation)."""
        bound = bind(cfg, hyper)
        bound_learner = make_learner(bound, spec)
        return bound_learner, make_scheme(bound, spec, bound_learner, buckets)

    def init(key: jax.Array, hyper: Hyper | None = None) -> TrainState:
        """One lane's state; ``hyper`` None: the config's own values."""
        hyper = hyper_of(cfg) if hyper is None else hyper
        k_learner, k_run = jax.random.split(key)
        zero = jnp.zeros((), jnp.int32)
        lane_learner, lane_scheme = lane(hyper)
        return TrainState(learner=lane_learner.init(k_learner), data=lane_scheme.init(), key=k_run,
                          t_env=zero, episodes=zero, updates=zero, hyper=hyper)

    def explore_fn(t_env: jax.Array, lrn: Learner = learner):
        return lambda params, q, state, avail, key: lrn.explore(params, q, state, avail, key, t_env)

    @functools.cache
    def collection_shapes() -> Episodes:
        """Shapes of one collection [E, ...], extras included, from the buffer layout and
        one abstract call of the act function — no roll-out is traced (tracing SMAX's
        step is most of a chunk's compile time), and host roll-outs have none to trace."""
        ls = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
        q = jax.ShapeDtypeStruct((cfg.n_envs, spec.n_agents, spec.n_actions), jnp.float32)
        avail = jax.ShapeDtypeStruct(q.shape, jnp.bool_)
        state = jax.ShapeDtypeStruct((cfg.n_envs, spec.state_dim), jnp.float32)
        _, extras = jax.eval_shape(explore_fn(jnp.int32(0)), ls.params, q, state, avail,
                                   jax.random.PRNGKey(0))
        base = jax.eval_shape(lambda: empty_episodes(spec, cfg.n_envs))
        t = spec.episode_limit
        return base.replace(extras={k: jax.ShapeDtypeStruct((v.shape[0], t, *v.shape[1:]), v.dtype)
                                    for k, v in extras.items()})

    def metric_names() -> list[str]:
        """Every metric one iteration reports (:func:`absorb`'s ``out`` but ``learned``)."""
        names = ["return", *(f"info/{k}" for k, _ in spec.return_metrics), "length", "shaping_coef"]
        names += ["shaped_return"] if cfg.reward_shaping_horizon else []
        names += [f"info/{k}" for k in spec.info_keys]
        return names + list(scheme.metric_shapes(collection_shapes))

    def absorb(ts: TrainState, key: jax.Array, k_learn: jax.Array, coef: jax.Array,
               episodes: Episodes, stats: EpisodeStats,
               active: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """Everything after a collection, for either roll-out: hand the E episodes
        [E, ...] to the data scheme (store, update, refresh targets), count. ``key``
        becomes the seed's next key. Where ``active`` [] is false the seed is frozen: the
        state comes back unchanged (the scheme gates its own state, the rest is selected:
        both cheap)."""
        if not cfg.bootstrap_truncated:  # a cut episode's last real step becomes terminal
            episodes = episodes.replace(terminated=episodes.terminated | last_step(episodes.mask))
        # the learning reward only (stats keep the scenario's units); a lane field, so
        # always applied (× 1.0 is exact)
        episodes = episodes.replace(reward=episodes.reward * ts.hyper["reward_scale"])
        t_env = ts.t_env + jnp.sum(stats.lengths)
        n_episodes = ts.episodes + cfg.n_envs
        lane_learner, lane_scheme = lane(ts.hyper)
        # Optional learner hook: time-dependent values kept in the learner state (FOP's α),
        # set from the env-step count before each round of updates.
        schedule = getattr(lane_learner, "schedule", None)
        ls = ts.learner if schedule is None else schedule(ts.learner, t_env)
        data, ls, metrics, n_updates = lane_scheme.absorb(ts.data, ls, episodes, k_learn,
                                                          n_episodes, active)
        new = TrainState(learner=ls, data=ts.data, key=key, t_env=t_env, episodes=n_episodes,
                         updates=ts.updates + n_updates, hyper=ts.hyper)
        new = keep_where(active, new, ts).replace(data=data)
        out = {
            "learned": n_updates > 0,
            "return": jnp.mean(stats.returns),
            **{f"info/{k}": jnp.mean(stats.returns) * c for k, c in spec.return_metrics},
            "length": jnp.mean(stats.lengths.astype(jnp.float32)),
            "shaping_coef": coef,
            # the unweighted shaping return: while the sparse return is still ~0 it is the
            # only sign of progress (Overcooked); logged only where shaping is on.
            **({"shaped_return": jnp.mean(stats.shaped_returns)} if cfg.reward_shaping_horizon else {}),
            **{f"info/{k}": jnp.mean(v) for k, v in stats.info.items()},
            **metrics,
        }
        return new, out

    def iteration(ts: TrainState, active: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        key, k_collect, k_learn = jax.random.split(ts.key, 3)
        params = ts.learner.params
        coef = shaping_coef(ts.t_env, cfg.reward_shaping_horizon)
        episodes, stats = rollout(
            env, learner.agent.apply, params["agent"], explore_fn(ts.t_env, lane(ts.hyper)[0]), params,
            learner.hidden_dim, k_collect, cfg.n_envs, shaping_coef=coef, active=active,
        )
        return absorb(ts, key, k_learn, coef, episodes, stats, active)

    def run(ts: TrainState, t_target: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """Iterate until ``t_env >= t_target``, then summarise the chunk."""
        acc0 = zero_sums(metric_names())

        def body(carry):
            ts, acc = carry
            active = ts.t_env < t_target
            ts, out = iteration(ts, active)
            return ts, keep_where(active, accumulate(acc, out), acc)

        # The loop runs while *any* seed is short of its target (an unbatched predicate:
        # a batched one would make vmap select between whole states, buffers included,
        # every iteration); each seed's own ``active`` freezes it once it is there.
        def any_active(carry):
            return seed_max((carry[0].t_env < t_target).astype(jnp.int32)) > 0

        ts, acc = jax.lax.while_loop(any_active, body, (ts, acc0))
        return ts, summarise(ts, acc)

    def evaluate(params: dict, key: jax.Array) -> dict[str, jax.Array]:
        """Greedy decentralised evaluation over ``test_episodes`` episodes."""
        _, stats = rollout(
            env, learner.agent.apply, params["agent"], greedy_act, params,
            learner.hidden_dim, key, cfg.test_episodes,
        )
        out = {"test/return": jnp.mean(stats.returns),
               "test/length": jnp.mean(stats.lengths.astype(jnp.float32))}
        out.update({f"test/{k}": jnp.mean(v) for k, v in stats.info.items()})
        out.update({f"test/{k}": jnp.mean(stats.returns) * c for k, c in spec.return_metrics})
        return out

    if isinstance(env, HostEnv):
        return _host_trainer(cfg, env, learner, init, absorb, metric_names, steps_per_iter_max,
                             buckets, scheme)
    return Trainer(init=init, scheme=scheme, run=run, evaluate=evaluate,
                   steps_per_iter_max=steps_per_iter_max, buckets=buckets)


#: Per-collection metrics, averaged over every iteration of a chunk; every other
#: iteration metric is an update metric, averaged over the iterations that learned.
_COLLECTION_METRICS = ("return", "length", "shaping_coef", "shaped_return")


def _is_collection_metric(name: str) -> bool:
    return name in _COLLECTION_METRICS or name.startswith("info/")


def is_update_metric(key: str) -> bool:
    """A chunk summary's ``train/<name>`` that comes from updates (losses, α, ...), not
    from the collected episodes."""
    return key.startswith("train/") and not _is_collection_metric(key.removeprefix("train/"))


def zero_sums(names: list[str]) -> dict[str, jax.Array]:
    """Running sums of one chunk's iteration metrics, all zero: one float32 per metric
    plus the counts ``iterations`` and ``learned``."""
    sums = {k: jnp.zeros((), jnp.float32) for k in names}
    return {**sums, "iterations": jnp.zeros((), jnp.float32), "learned": jnp.zeros((), jnp.float32)}


def accumulate(acc: dict[str, jax.Array], out: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Add one iteration's metrics ``out`` to the running sums ``acc`` (scalars)."""
    if set(out) - {"learned"} != set(acc) - {"iterations", "learned"}:
        raise ValueError(f"iteration metrics {sorted(out)} do not match the sums {sorted(acc)}")
    learned = out["learned"].astype(jnp.float32)
    new = {"iterations": acc["iterations"] + 1.0, "learned": acc["learned"] + learned}
    for k, v in out.items():
        if k == "learned":
            continue
        weight = 1.0 if _is_collection_metric(k) else learned
        new[k] = acc[k] + weight * v.astype(jnp.float32)
    return new


def summarise(ts: TrainState, acc: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One chunk's summary: collection metrics averaged over its iterations, update metrics
    over the iterations where learning had started (0 where none did), the counters."""
    n_iter = jnp.maximum(acc["iterations"], 1.0)
    n_learned = jnp.maximum(acc["learned"], 1.0)
    summary = {f"train/{k}": v / (n_iter if _is_collection_metric(k) else n_learned)
               for k, v in acc.items() if k not in ("iterations", "learned")}
    summary.update(t_env=ts.t_env, episodes=ts.episodes, updates=ts.updates)
    # how many of the chunk's iterations learned: where none did, the run loop leaves
    # the update metrics out of the row (their 0 would read as a value: α 0, loss 0)
    summary["learned_iterations"] = acc["learned"]
    # the divergence guard's view of the parameters (the run loop pops it)
    summary["finite_params"] = jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(ts.learner.params)]))
    return summary


def _host_trainer(cfg: Config, env: HostEnv, learner: Learner, init, absorb, metric_names,
                  steps_per_iter_max: int, buckets: tuple[int, ...], scheme: DataScheme) -> Trainer:
    """The training program for a host environment (:mod:`meigm.rollout.host`).

    Same state, same update, same metrics, same per-seed budgets as the compiled
    program; only the collection runs on the host between two jitted calls. ``run`` and
    ``evaluate`` here take the *stacked* seeds (``batched=True``) — they are Python loops
    around jitted pieces, so the caller must not ``jit``/``vmap`` them again.
    """
    workers: list[HostVecEnv] = []  # started on first use: building a program stays cheap

    def vec() -> HostVecEnv:
        if not workers:
            workers.append(HostVecEnv(env, cfg.seeds * cfg.n_envs, cfg.env_workers))
        return workers[0]

    def close() -> None:
        while workers:
            workers.pop().close()

    explore = make_policy_step(learner.agent.apply, learner.explore)
    greedy = make_policy_step(learner.agent.apply,
                              lambda p, q, s, a, k, t: greedy_act(p, q, s, a, k))  # t_env unused

    @jax.jit
    def prepare(ts: TrainState):  # [S] states -> keys and shaping coefficients per seed
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(ts.key)  # [S, 3, 2]
        coef = jax.vmap(lambda t: shaping_coef(t, cfg.reward_shaping_horizon))(ts.t_env)
        return keys[:, 0], keys[:, 1], keys[:, 2], coef

    absorb_all = jax.vmap(absorb, axis_name=SEEDS)

    @jax.jit
    def absorb_active(ts, acc, active, key, k_learn, coef, episodes, stats):
        """absorb every seed's collection, keep it only where ``active`` [S]."""
        new, out = absorb_all(ts, key, k_learn, coef, episodes, stats, active)
        return new, select_seeds(active, jax.vmap(accumulate)(acc, out), acc)

    summarise_all = jax.jit(jax.vmap(summarise))

    def run(ts: TrainState, t_target: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """ts leaves [S, ...], t_target [S] -> (ts, summaries {k: [S]})."""
        acc = jax.tree.map(lambda x: jnp.zeros((cfg.seeds, *x.shape), x.dtype), zero_sums(metric_names()))
        while (active := np.asarray(ts.t_env) < np.asarray(t_target)).any():
            key, k_collect, k_learn, coef = prepare(ts)
            episodes, stats = host_rollout(vec(), explore, ts.learner.params, learner.hidden_dim,
                                           k_collect, ts.t_env, cfg.seeds)
            ts, acc = absorb_active(ts, acc, jnp.asarray(active), key, k_learn, coef, episodes, stats)
        return ts, summarise_all(ts, acc)

    def evaluate(params: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Greedy episodes, ``test_episodes`` per seed, in rounds of ``n_envs``.
        params leaves [S, ...], keys [S, 2] -> {metric: [S]}."""
        rounds = -(-cfg.test_episodes // cfg.n_envs)
        parts = []
        for r in range(rounds):
            round_keys = jax.vmap(lambda k, r=r: jax.random.fold_in(k, r))(keys)
            parts.append(host_rollout(vec(), greedy, params, learner.hidden_dim, round_keys,
                                      jnp.zeros(cfg.seeds, jnp.int32), cfg.seeds)[1])
        returns = np.concatenate([p.returns for p in parts], 1)[:, :cfg.test_episodes]
        lengths = np.concatenate([p.lengths for p in parts], 1)[:, :cfg.test_episodes]
        out = {"test/return": returns.mean(1), "test/length": lengths.astype(np.float32).mean(1)}
        for k in env.spec.info_keys:
            out[f"test/{k}"] = np.concatenate([p.info[k] for p in parts], 1)[:, :cfg.test_episodes].mean(1)
        out.update({f"test/{k}": returns.mean(1) * c for k, c in env.spec.return_metrics})
        return out

    return Trainer(init=init, scheme=scheme, run=run, evaluate=evaluate,
                   steps_per_iter_max=steps_per_iter_max, buckets=buckets, batched=True,
                   close=close)


def compiled(trainer: Trainer, donate: bool = False) -> tuple[Callable, Callable]:
    """``(run, evaluate)`` over stacked seeds: ``jit(vmap(·))`` of a JAX trainer's
    functions (over the named axis :data:`SEEDS`), a host trainer's own (already batched)
    ones. ``run(state, t_target)`` takes one target for all seeds (an int) or one per
    seed ([S]).

    ``donate=True`` hands the input state's buffers to ``run`` (``donate_argnums``), so
    XLA writes the new state over the old one: a run then holds its replay buffers once
    rather than twice (input and output of the chunk), which halves the peak memory of
    a long SMAX run. The state passed in is unusable afterwards; the training loop
    never reuses it, callers that time or compare repeats from one state must not
    donate."""
    if trainer.batched:
        return _broadcast_target(trainer.run), trainer.evaluate
    return _broadcast_target(jit_run(trainer, donate)), jax.jit(jax.vmap(trainer.evaluate, axis_name=SEEDS))


def jit_run(trainer: Trainer, donate: bool = False) -> Callable:
    """A JAX trainer's chunk over stacked seeds, jitted: ``(state, t_target [S]) ->
    (state, metrics)``. :func:`compiled` wraps it; this one can also be ``lower``-ed
    on abstract shapes (``benchmarks/throughput.py --memory`` reads its working set)."""
    return jax.jit(jax.vmap(trainer.run, axis_name=SEEDS), donate_argnums=0 if donate else ())


def _broadcast_target(run: Callable) -> Callable:
    def targets(state, t_target):
        seeds = np.asarray(state.t_env).shape[0]
        return jnp.broadcast_to(jnp.asarray(t_target, jnp.int32), (seeds,))

    def run_to(state, t_target):
        return run(state, targets(state, t_target))

    if hasattr(run, "lower"):  # a jitted chunk: compile it ahead of its first call
        run_to.lower = lambda state, t_target: run.lower(state, targets(state, t_target))
    return run_to


def init_seeds(init: Callable[..., object], keys: jax.Array, hyper: dict[str, Any] | None = None):
    """Initialise every seed and stack the results along a leading seed axis.

    Deliberately *not* ``vmap(init)``: Flax's orthogonal GRU initialiser is a QR
    factorisation, and a batched QR on the CPU runs LAPACK's ``ParallelBatchMap`` on
    XLA's intra-op thread pool and blocks that pool's threads waiting for sub-tasks
    queued to the same pool. On a 2-core machine both threads can end up waiting and
    the run hangs for ever (seen here with jaxlib 0.10.2 in roughly one fresh 10-seed
    run in three; the native stacks show both ``tf_XLAEigen`` threads in
    ``QrFactorization -> ParallelBatchMap -> BlockingCounter::Wait``). Initialising
    seed by seed uses unbatched QR, runs once per run, and gives the same parameters
    as the seed trained alone. The seeds are unrolled inside one jitted program, so
    the stacked state (its replay buffers most of all) is written once, not built
    per seed and copied: the start of a run needs its buffers' memory once, not twice.

    keys [lanes, 2], hyper {lane field: [lanes]} or None (the program's own config in
    every lane) -> pytree with leaves [lanes, ...].
    """
    def init_all(keys, hyper):
        states = [init(keys[i]) if hyper is None else init(keys[i], {k: v[i] for k, v in hyper.items()})
                  for i in range(keys.shape[0])]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    return jax.jit(init_all)(keys, hyper)


def seed_keys(cfg: Config) -> jax.Array:
    """One independent key per seed: seed i uses ``PRNGKey(cfg.seed + i)``."""
    return jnp.stack([jax.random.PRNGKey(cfg.seed + i) for i in range(cfg.seeds)])


def keep_where(active: jax.Array, new, old):
    """``new`` if ``active`` [] else ``old``, leaf by leaf (one seed's pytrees)."""
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)


def select_seeds(active: jax.Array, new, old):
    """Per seed, ``new`` where ``active`` [S] else ``old`` (pytrees with leaves [S, ...])."""
    def pick(n, o):
        return jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)
