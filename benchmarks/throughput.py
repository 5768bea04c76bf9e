"""Training throughput beside its two floors: the environment alone and the bare network.

    python benchmarks/throughput.py                                  # smax:protoss_5_vs_5
    python benchmarks/throughput.py --env overcooked:cramped_room batch_size=512 td_lambda=0.6
    python benchmarks/throughput.py --algs me_qmix --repeats 5 n_envs=8
    python benchmarks/throughput.py --env smax:3m --buckets 1,4,8
    python benchmarks/throughput.py --env overcooked:cramped_room --buckets 1 \
        --batch-sizes 32,128,512 td_lambda=0.6 buffer_size=520 test_interval=20000
    python benchmarks/throughput.py --env overcooked:cramped_room --batch-sizes 32,512 --memory

For each algorithm, all in this process and with the paper's hyper-parameters unless
overridden (4 parallel envs, batch 128 episodes, one update per collection):

* **env steps/s, random actions** — ``n_envs`` environments stepped with uniformly
  random available actions inside the same scanned, vmapped roll-out the trainer uses
  (so it includes the padding to the episode limit), no network;
* **bare fwd+bwd** — the agent network unrolled over one training batch
  (``batch_size`` episodes × (T+1) steps × N agents) and differentiated: the least
  work any update on that batch has to do;
* **first layer** — the agent's first layer alone (inputs -> ``hidden_dim``) over the
  same batch, forward and backward, and its share of bare fwd+bwd: on scenarios with
  wide observations (Overcooked's 520) it is the part a smaller input would save;
* **update** — one whole update on a sampled batch (online + target unroll, mixer,
  targets, every loss, Adam) as the trainer runs it: trimmed to the smallest of
  ``length_buckets`` lengths that holds the batch's longest episode, and its ratio to
  bare fwd+bwd (which is always full-length);
* **train env steps/s** — the whole compiled loop (collect + buffer + update +
  target refresh) once the buffer holds a batch, compile excluded; each setting
  starts from the same filled state, its repeats follow one another.

Each ``--buckets`` setting (``1`` = every update over the whole episode limit, the
behaviour before issue 14) is measured on the same filled buffer and the same batch.
Each ``--batch-sizes`` value (default: the config's) is a separate program, in the
same process, so the rows of one call compare under the same conditions.

Each figure is the median of ``--repeats`` timed calls after a warm-up call.

``--profile DIR`` also traces one isolated update and one training chunk with JAX's
profiler (after the timed calls, for the first ``--buckets`` setting) and prints where
each spends its time: the self time of every XLA CPU thunk, by kind, per update
(``thunk_seconds``). It answers what the timings cannot: whether the loop runs the same
kernels slower than the isolated update, runs extra ones, or leaves the cores idle.

``--memory`` times nothing: it compiles the chunk and the update on abstract shapes and
prints XLA's account of their working sets, arguments, flops and bytes accessed
(``compiled_account``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import gzip
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from meigm import config
from meigm.envs import make_env
from meigm.learners.common import last_action_onehot, unroll_agent
from meigm.networks.agent import agent_inputs
from meigm.program import compiled, init_seeds, jit_run, make_program, seed_keys
from meigm.rollout import buffer_sample, random_act, rollout
from meigm.rollout.buffer import longest_episode
from meigm.schemes import bucketed_update


def timed(fn, *args, repeats: int) -> float:
    """Median seconds of ``fn(*args)`` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def thunk_seconds(trace_dir: Path, by_name: bool = False) -> tuple[dict[str, float], float]:
    """Self time (s) of each kind of XLA CPU thunk in the perfetto trace under
    ``trace_dir``, summed over threads, and the trace's wall span (s) of those thunks.

    A thunk's kind is its HLO name without the numeric suffix (``fusion.12`` -> ``fusion``),
    so the same kernels compare across programs; ``by_name`` keeps the whole name, which
    is the instruction's name in the program's ``compiled.as_text()`` (the way from a slow
    thunk to the HLO, and the ``op_name`` of the JAX code, behind it). Self time excludes
    nested thunks (a ``while`` holds its body's), so they add up to the threads' busy time."""
    traces = sorted(trace_dir.rglob("*perfetto_trace.json.gz"))
    if not traces:
        raise FileNotFoundError(f"no perfetto trace under {trace_dir}")
    raw = json.loads(gzip.decompress(traces[-1].read_bytes()))
    events = raw["traceEvents"] if isinstance(raw, dict) else raw
    by_thread: dict[int, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for e in events:  # thunks carry their HLO module; the runtime's own markers do not
        if e.get("ph") == "X" and "hlo_module" in e.get("args", {}):
            name = e["name"] if by_name else re.sub(r"\.\d+$", "", e["name"])
            by_thread[e["tid"]].append((e["ts"], e["dur"], name))
    self_us: dict[str, float] = collections.defaultdict(float)
    first, last = float("inf"), float("-inf")
    for spans in by_thread.values():
        spans.sort(key=lambda x: (x[0], -x[1]))
        stack: list[list] = []  # [end, kind, time of direct children]
        for ts, dur, kind in spans:
            first, last = min(first, ts), max(last, ts + dur)
            while stack and stack[-1][0] <= ts:
                _, k, children = stack.pop()
                self_us[k] -= children
            if stack:
                stack[-1][2] += dur
            self_us[kind] += dur
            stack.append([ts + dur, kind, 0.0])
        for _, k, children in stack:
            self_us[k] -= children
    return {k: v / 1e6 for k, v in self_us.items()}, max(last - first, 0.0) / 1e6


def profiled(trace_dir: Path, fn: Callable, *args) -> tuple[object, dict[str, float], float]:
    """``fn(*args)`` (already compiled) traced into ``trace_dir``: its result and its
    ``thunk_seconds``."""
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        result = jax.block_until_ready(fn(*args))
    return (result, *thunk_seconds(trace_dir))


def heaviest(trace_dir: Path, n: int = 5, per: int = 1) -> dict[str, float]:
    """The ``n`` single thunks (by whole name) with the most self time in the trace under
    ``trace_dir``, in s, divided by ``per`` (the updates the traced call made)."""
    names, _ = thunk_seconds(trace_dir, by_name=True)
    return {k: v / per for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:n]}


def env_only(env, n_envs: int, repeats: int) -> float:
    """Env steps/s of random available actions in the trainer's roll-out."""
    spec = env.spec

    def agent(params, hidden, inputs):  # no network: zero Q-values
        return hidden, jnp.zeros((*inputs.shape[:-1], spec.n_actions))

    @jax.jit
    def collect(key):
        _, stats = rollout(env, agent, None, random_act, None, 1, key, n_envs)
        return jnp.sum(stats.lengths)

    steps = int(collect(jax.random.PRNGKey(1)))
    return steps / timed(collect, jax.random.PRNGKey(1), repeats=repeats)


def parse_setting(setting: str) -> tuple[int, int]:
    """``"8"`` -> (8 buckets, 1 group); ``"8x4"`` -> (8 buckets, 4 length-sorted groups)."""
    n, _, g = setting.partition("x")
    return int(n), int(g or 1)


def setting_label(setting: str) -> str:
    n, g = parse_setting(setting)
    return f"length_buckets={n}" + (f",length_groups={g}" if g > 1 else "")


def measure(alg: str, env_name: str, overrides: list[str], repeats: int,
            buckets: list[str], profile: Path | None = None) -> dict[str, dict[str, float]]:
    """Figures of one algorithm for each update setting (``parse_setting``: buckets and
    length-sorted groups), from the same filled buffer and the same sampled batch (so
    the settings differ only in the update).

    States are donated from call to call and at most two are held at once: at
    Overcooked's paper batch (512 episodes of 400 steps) a state is ~1.8 GB, and holding
    a few of them beside the update's working set ran this 24 GB box out of memory.

    With ``profile``, the first setting's update and one of its training chunks are
    traced there after their timed calls; ``out["profile"]`` holds the thunk seconds of
    each, the chunk's divided by the updates it made."""
    env = make_env(env_name)

    def build(setting: str):
        n_buckets, groups = parse_setting(setting)
        program = make_program(config.build(
            None, [*overrides, f"length_buckets={n_buckets}", f"length_groups={groups}"],
            alg=alg, env=env_name, seeds=1), env)
        return program.cfg, program.learner, program.trainer

    cfg, learner, trainer = build(buckets[0])
    run, _ = compiled(trainer, donate=True)
    ts = init_seeds(trainer.init, seed_keys(cfg))
    # Fill the buffer past one batch with the exploration policy (untimed).
    while int(ts.data.buffer.size[0]) < cfg.batch_size:
        ts, _ = run(ts, np.asarray(ts.t_env) + cfg.n_envs)
    learner0 = jax.tree.map(lambda x: x[0], ts.learner)  # seed 0's learner, one batch
    batch = buffer_sample(jax.tree.map(lambda x: x[0], ts.data.buffer), jax.random.PRNGKey(2),
                          cfg.batch_size)

    @jax.jit
    def fwd_bwd(agent_params, episodes):
        def total_q(p):
            return jnp.sum(unroll_agent(learner.agent, p, episodes, learner.hidden_dim))
        return jax.grad(total_q)(agent_params)

    @jax.jit
    def first_layer(agent_params, episodes):
        n_actions = episodes.avail.shape[-1]
        inputs = agent_inputs(episodes.obs, last_action_onehot(episodes.actions, n_actions))
        kernel = agent_params["params"]["fc1"]

        def total(k):
            return jnp.sum(jax.nn.relu(inputs @ k["kernel"] + k["bias"]))
        return jax.grad(total)(kernel)

    common = {
        "batch_longest_episode": int(longest_episode(batch)),
        "bare_fwd_bwd_s": timed(fwd_bwd, learner0.params["agent"], batch, repeats=repeats),
        "first_layer_fwd_bwd_s": timed(first_layer, learner0.params["agent"], batch, repeats=repeats),
        "agent_input_dim": int(batch.obs.shape[-1] + batch.obs.shape[-2] + batch.avail.shape[-1]),
    }
    settings = {n: build(n) for n in buckets}
    updates = {}
    profiles: dict[str, dict] = {}
    for n, (c, le, tr) in settings.items():
        update = jax.jit(lambda ls, b, k, tr=tr, le=le, g=c.length_groups:
                         bucketed_update(le, tr.buckets, ls, b, k, g))
        updates[n] = timed(update, learner0, batch, jax.random.PRNGKey(3), repeats=repeats)
        if profile is not None and n == buckets[0]:
            _, kinds, wall = profiled(profile / "update", update, learner0, batch, jax.random.PRNGKey(3))
            profiles["update"] = {"wall_s": wall, "updates": 1, "thunk_s": kinds,
                                  "heaviest_s": heaviest(profile / "update")}
    del batch
    out: dict[str, dict[str, float]] = {}
    for i, (setting, (cfg, _, trainer)) in enumerate(settings.items()):
        run, _ = compiled(trainer, donate=True)
        # every setting starts from the same filled state: a copy, the last one the original
        start = ts if i == len(settings) - 1 else jax.tree.map(jnp.copy, ts)
        t0 = time.perf_counter()
        start, _ = run(start, np.asarray(start.t_env) + cfg.test_interval)  # compiles
        jax.block_until_ready(start)
        compile_s = time.perf_counter() - t0
        rates, lengths = [], []
        for _ in range(repeats):
            before = int(start.t_env[0])
            t0 = time.perf_counter()
            start, metrics = run(start, before + cfg.test_interval)
            jax.block_until_ready(metrics)
            rates.append((int(start.t_env[0]) - before) / (time.perf_counter() - t0))
            lengths.append(float(metrics["train/length"][0]))
        if profile is not None and i == 0:
            updates_before = int(start.updates[0])
            (start, _), kinds, wall = profiled(profile / "chunk", run, start,
                                               int(start.t_env[0]) + cfg.test_interval)
            made = int(start.updates[0]) - updates_before
            profiles["chunk"] = {"wall_s": wall / made, "updates": made,
                                 "thunk_s": {k: v / made for k, v in kinds.items()},
                                 "heaviest_s": heaviest(profile / "chunk", per=made)}
        del start
        out[setting_label(setting)] = {
            "buckets": list(trainer.buckets),
            **common,
            "update_s": updates[setting],
            "update_over_bare": updates[setting] / common["bare_fwd_bwd_s"],
            "train_env_steps_per_s": statistics.median(rates),
            "first_chunk_with_compile_s": compile_s,
            "mean_episode_length": statistics.median(lengths),
        }
    del ts
    out["env"] = {"env_steps_per_s_random": env_only(env, cfg.n_envs, repeats)}
    if profiles:
        out["profile"] = profiles
    return out


def print_profile(key: str, prof: dict, top: int = 12) -> None:
    """Where one update's time goes, isolated and in the loop, thunk kind by kind."""
    upd, chunk = prof["update"], prof["chunk"]
    kinds = sorted(set(upd["thunk_s"]) | set(chunk["thunk_s"]),
                   key=lambda k: -max(upd["thunk_s"].get(k, 0.0), chunk["thunk_s"].get(k, 0.0)))
    busy_u, busy_c = sum(upd["thunk_s"].values()), sum(chunk["thunk_s"].values())
    print(f"\n{key}: thunk self time per update (ms), the isolated update against the training "
          f"loop (the chunk made {chunk['updates']} updates; its roll-out is in the loop's figures)")
    print("| thunk kind | isolated update | in the loop, per update | loop / isolated |\n|---|---|---|---|")
    for k in kinds[:top]:
        u, c = upd["thunk_s"].get(k, 0.0), chunk["thunk_s"].get(k, 0.0)
        print(f"| {k} | {u * 1e3:.4g} | {c * 1e3:.4g} | {c / u if u else float('inf'):.2f} |")
    rest_u = busy_u - sum(upd["thunk_s"].get(k, 0.0) for k in kinds[:top])
    rest_c = busy_c - sum(chunk["thunk_s"].get(k, 0.0) for k in kinds[:top])
    print(f"| (other kinds) | {rest_u * 1e3:.4g} | {rest_c * 1e3:.4g} | |")
    print(f"| **busy thread time** | {busy_u * 1e3:.4g} | {busy_c * 1e3:.4g} | {busy_c / busy_u:.2f} |")
    ratio = chunk["wall_s"] / upd["wall_s"]
    print(f"| **wall** | {upd['wall_s'] * 1e3:.4g} | {chunk['wall_s'] * 1e3:.4g} | {ratio:.2f} |")
    for where, prog in (("isolated update", upd), ("loop, per update", chunk)):
        top = ", ".join(f"{k} {v * 1e3:.4g}" for k, v in prog["heaviest_s"].items())
        print(f"heaviest single thunks (ms), {where}: {top}")
    print("(a thunk's name is its instruction in the program's compiled.as_text())", flush=True)


def compiled_account(alg: str, env_name: str, overrides: list[str]) -> dict[str, float]:
    """XLA's own account of one training chunk and one isolated update, from compiling
    them on abstract shapes: nothing is allocated or run, so unlike the timings it can be
    taken beside other work.

    Memory (``memory_analysis``, GB): ``temp`` is the working set beyond the arguments
    (activations, gradients, the sampled batch), ``args`` the state or learner state and
    batch passed in. Cost (``cost_analysis``): ``gflop`` and ``gb_accessed`` (bytes read
    and written). XLA counts a loop's body once, not once per trip, so the chunk's cost is
    one collection's roll-out step plus one update: equal to the update's when the loop
    adds no work around the update, whatever the trip counts."""
    program = make_program(config.build(None, overrides, alg=alg, env=env_name, seeds=1),
                           make_env(env_name))
    trainer, cfg = program.trainer, program.cfg
    state = jax.eval_shape(lambda k: init_seeds(trainer.init, k), seed_keys(cfg))
    one_seed = functools.partial(jax.tree.map, lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    key = jax.random.PRNGKey(0)
    batch = jax.eval_shape(lambda b, k: buffer_sample(b, k, cfg.batch_size), one_seed(state.data.buffer), key)
    chunk = jit_run(trainer, donate=True).lower(
        state, jax.ShapeDtypeStruct((cfg.seeds,), jnp.int32)).compile()
    update = jax.jit(lambda ls, b, k: bucketed_update(program.learner, trainer.buckets, ls, b, k)).lower(
        one_seed(state.learner), batch, key).compile()
    out = {}
    for name, c in (("chunk", chunk), ("update", update)):
        m = c.memory_analysis()
        cost = c.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # a list in older jax
        out |= {f"{name}_temp_gb": m.temp_size_in_bytes / 1e9,
                f"{name}_args_gb": m.argument_size_in_bytes / 1e9,
                f"{name}_gflop": float(cost.get("flops", 0.0)) / 1e9,
                f"{name}_gb_accessed": float(cost.get("bytes accessed", 0.0)) / 1e9}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="smax:protoss_5_vs_5")
    p.add_argument("--algs", default="me_qmix,qmix", help="comma-separated algorithms")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--buckets", default="1,4",
                   help="comma-separated update settings to compare: length_buckets, or "
                        "length_buckets x length_groups (8x4: 8 buckets, 4 length-sorted groups); "
                        "1: full-length update")
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated batch sizes (episodes per update) to compare; default: the config's")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--memory", action="store_true",
                   help="only XLA's account (memory, flops, bytes accessed) of the chunk and of the "
                        "update (compile, no timing)")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also trace one update and one training chunk per row into DIR and print "
                        "each one's XLA thunk times")
    p.add_argument("overrides", nargs="*", default=[], help="config key=value (default test_interval=10000)")
    a = p.parse_args()
    overrides = a.overrides or ["test_interval=10000"]
    batch_sizes = [None] if a.batch_sizes is None else [int(b) for b in a.batch_sizes.split(",")]
    if a.memory:
        print("| algorithm | chunk working set GB | chunk arguments GB | update working set GB "
              "| update arguments GB | chunk GFLOP | update GFLOP | chunk GB accessed "
              "| update GB accessed |\n|---|---|---|---|---|---|---|---|---|")
        for alg in a.algs.split(","):
            for b in batch_sizes:
                key = alg if b is None else f"{alg} batch_size={b}"
                m = compiled_account(alg, a.env, [*overrides, *([] if b is None else [f"batch_size={b}"])])
                print(f"| {key} | {m['chunk_temp_gb']:.2f} | {m['chunk_args_gb']:.2f} | "
                      f"{m['update_temp_gb']:.2f} | {m['update_args_gb']:.2f} | "
                      f"{m['chunk_gflop']:.1f} | {m['update_gflop']:.1f} | "
                      f"{m['chunk_gb_accessed']:.2f} | {m['update_gb_accessed']:.2f} |", flush=True)
                jax.clear_caches()
        return
    device = jax.devices()[0]
    print(f"# {a.env}, {' '.join(overrides) or 'paper defaults'}; median of {a.repeats}; "
          f"{platform.machine()} x{jax.local_device_count()} {device.platform} ({device.device_kind}), "
          f"jax {jax.__version__}")
    print("| algorithm | length_buckets | env-only steps/s (random) | batch's longest episode "
          "| bare fwd+bwd s | first layer s (share) | update s | update / bare "
          "| train env steps/s | mean episode length |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for alg in a.algs.split(","):
        for b in batch_sizes:
            extra = [] if b is None else [f"batch_size={b}"]
            key = alg if b is None else f"{alg} batch_size={b}"
            trace_dir = None if a.profile is None else Path(a.profile) / key.replace(" ", "_")
            by_setting = rows[key] = measure(alg, a.env, [*overrides, *extra], a.repeats,
                                             a.buckets.split(","), trace_dir)
            for setting, r in by_setting.items():
                if setting not in ("env", "profile"):
                    print(f"| {key} | {setting.removeprefix('length_buckets=')} "
                          f"{tuple(r['buckets'])} | "
                          f"{by_setting['env']['env_steps_per_s_random']:.0f} | "
                          f"{r['batch_longest_episode']} | {r['bare_fwd_bwd_s']:.3f} | "
                          f"{r['first_layer_fwd_bwd_s']:.3f} "
                          f"({r['first_layer_fwd_bwd_s'] / r['bare_fwd_bwd_s']:.0%}) | "
                          f"{r['update_s']:.3f} | {r['update_over_bare']:.2f} | "
                          f"{r['train_env_steps_per_s']:.0f} | {r['mean_episode_length']:.1f} |",
                          flush=True)
            if "profile" in by_setting:
                print_profile(key, by_setting["profile"])
            if a.json:  # after every row: a long call that dies keeps what it measured
                Path(a.json).write_text(json.dumps({"env": a.env, "overrides": overrides,
                                                    "rows": rows}, indent=1))
            jax.clear_caches()  # the finished programs' executables
            gc.collect()


if __name__ == "__main__":
    main()
