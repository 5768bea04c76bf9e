"""Metric logging of a training run: one call per evaluation point, fanned out to sinks.

``MetricsLogger.log(records)`` takes one record per seed — ``{"seed", "t_env",
"train/...", "test/...", ...}`` as written to ``metrics.jsonl`` — and hands them to

* :class:`JsonlSink` — ``metrics.jsonl``, the run's own record (always);
* :class:`TensorBoardSink` — ``tb/seed_<n>/`` event files via tensorboardX (always);
* :class:`WandbSink` — Weights & Biases, only with ``wandb=true`` in the config.

TensorBoard layout: one event directory per seed, tags without a seed prefix
(``test/return``, ``train/loss``, ...), step = that seed's env steps. TensorBoard treats
each directory as a *run*, so every tag gets one chart with the seeds overlaid (and
selectable, smoothable, comparable across run directories with ``tensorboard --logdir
runs/``), which is how TensorBoard users expect seeds to appear; a ``seed0/test/return``
tag would instead give a separate chart per seed and metric.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meigm.errors import MeigmError

if TYPE_CHECKING:
    from meigm.config import Config

#: Keys of a record that identify it rather than measure something.
_INDEX_KEYS = ("seed", "t_env")


#: Keys of a record that time the run: the only entries a rerun of the same config and seed
#: on the same machine does not reproduce exactly.
CLOCK_KEYS = ("wall_seconds",)


def without_clock(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` less its :data:`CLOCK_KEYS`: what "same config + seed -> same numbers"
    promises, so what a reproducibility or resume check compares."""
    return {k: v for k, v in record.items() if k not in CLOCK_KEYS}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The plottable entries of a record as floats (bools 0/1); no index keys or lists."""
    out = {}
    for key, value in record.items():
        if key in _INDEX_KEYS or isinstance(value, list | dict | str):
            continue
        out[key] = float(value)
    return out


class JsonlSink:
    """``metrics.jsonl``: one JSON object per (evaluation point, seed), flushed per point."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a")

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """One tensorboardX ``SummaryWriter`` per seed under ``<root>/seed_<n>``."""

    def __init__(self, root: Path, seeds: list[int], purge_step: int | None = None) -> None:
        from tensorboardX import SummaryWriter

        # purge_step (a resumed run): TensorBoard discards the events at or after it that
        # the interrupted run had written past its checkpoint, so no step appears twice.
        self._writers = {s: SummaryWriter(logdir=str(root / f"seed_{s}"), flush_secs=30,
                                          purge_step=purge_step) for s in seeds}

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            writer = self._writers[record["seed"]]
            for tag, value in scalars(record).items():
                writer.add_scalar(tag, value, global_step=int(record["t_env"]))
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def require_wandb() -> None:
    """Fail before anything is written when W&B logging is asked for but not installed."""
    if importlib.util.find_spec("wandb") is None:
        raise MeigmError(
            "wandb=true but the wandb package is not installed; `pip install wandb` or set wandb=false"
        )


class WandbSink:
    """Weights & Biases: keys ``seed<n>/<metric>``, each plotted against ``seed<n>/t_env``.

    W&B has one monotonic step per run, but seeds reach an evaluation point at different
    env-step counts (episodes end at different times), so each seed gets its own x-axis
    metric instead of sharing W&B's step.
    """

    def __init__(self, cfg: Config, run_dir: Path | None) -> None:
        require_wandb()
        import wandb

        self._run = wandb.init(
            project=cfg.wandb_project or "meigm",
            name=run_dir.name if run_dir is not None else None,
            dir=str(run_dir) if run_dir is not None else None,
            config=cfg.to_dict(),
        )
        for s in range(cfg.seed, cfg.seed + cfg.seeds):
            self._run.define_metric(f"seed{s}/t_env")
            self._run.define_metric(f"seed{s}/*", step_metric=f"seed{s}/t_env")

    def write(self, records: list[dict[str, Any]]) -> None:
        row: dict[str, float] = {}
        for record in records:
            prefix = f"seed{record['seed']}"
            row[f"{prefix}/t_env"] = int(record["t_env"])
            row.update({f"{prefix}/{k}": v for k, v in scalars(record).items()})
        self._run.log(row)

    def close(self) -> None:
        self._run.finish()


class MetricsLogger:
    """Fan-out of per-seed evaluation records to every configured sink.

    With ``run_dir=None`` (tests, benchmarks) only W&B, if enabled, receives anything.
    Use as a context manager so event files are flushed and closed even on Ctrl-C.
    """

    def __init__(self, cfg: Config, run_dir: Path | None, purge_step: int | None = None) -> None:
        self.sinks: list[JsonlSink | TensorBoardSink | WandbSink] = []
        try:
            if run_dir is not None:
                self.sinks.append(JsonlSink(run_dir / "metrics.jsonl"))
                seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
                self.sinks.append(TensorBoardSink(run_dir / "tb", seeds, purge_step))
            if cfg.wandb:
                self.sinks.append(WandbSink(cfg, run_dir))
        except BaseException:
            self.close()
            raise

    def log(self, records: list[dict[str, Any]]) -> None:
        for sink in self.sinks:
            sink.write(records)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def headline_metric(test_metrics: dict[str, Any]) -> tuple[str, str]:
    """(label, formatted value) of the number a progress bar should show.

    The win rate where the scenario reports one (SMAX: ``test/won``), else the mean
    greedy test return. ``test_metrics`` values are per-seed arrays [seeds] or scalars.
    """
    import numpy as np

    if "test/won" in test_metrics:
        return "test/won", f"{float(np.mean(test_metrics['test/won'])):.0%}"
    value = float(np.mean(test_metrics["test/return"]))
    return "test/return", f"{value:.2f}" if math.isfinite(value) else str(value)
