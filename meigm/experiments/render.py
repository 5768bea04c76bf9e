"""GIF animations of one greedy episode, one renderer per environment family.

A renderer turns the environment states of one episode (``rollout(...,
keep_states=True)``, leaves [T+1, ...]) into RGB frames; :func:`write_gif` assembles
them with Pillow. Everything is drawn off-screen (matplotlib's Agg canvas, no pyplot
window), so rendering works on a headless machine.

* ``smax`` — drawn here with matplotlib, one frame per environment step: units as
  discs sized by their type's radius (allies blue, enemies red, faded with lost
  health), a line from each unit to the unit it attacked in the last step. JaxMARL's
  ``SMAXVisualizer`` also draws the 8 world sub-steps of every step, but replays them by
  re-stepping the environment with a key split that our adapter does not use, and
  re-renders through ``savefig`` per sub-step (minutes per episode).
* ``overcooked`` — the kitchen grid tiles from JaxMARL's ``OvercookedVisualizer``
  (its tile renderer is a pure numpy function of the state's ``maze_map``); its own
  ``animate`` needs imageio and writes no captions, so frames are assembled here.

Every frame carries a caption with the step and the return so far; besides being
useful, it keeps consecutive frames distinct (GIF writers merge identical frames, and a
policy that stands still would otherwise give a one-frame GIF).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meigm.errors import MeigmError

if TYPE_CHECKING:
    from PIL.Image import Image

    from meigm.envs import Env

#: (env, states with leaves [T+1, ...], rewards [T], episode length) -> RGB frames.
Renderer = Callable[["Env", Any, np.ndarray, int], list["Image"]]


def _caption(img: np.ndarray, text: str) -> Image:
    """RGB array [H, W, 3] -> image with a white caption strip underneath."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    h, w = img.shape[:2]
    out = PILImage.new("RGB", (w, h + 16), "white")
    out.paste(PILImage.fromarray(np.ascontiguousarray(img, dtype=np.uint8)), (0, 0))
    ImageDraw.Draw(out).text((4, h + 2), text, fill="black")
    return out


def _captions(rewards: np.ndarray, length: int) -> list[str]:
    """Caption of frame t = 0..length: step and return accumulated before it (short: an
    Overcooked kitchen is ~200 px wide)."""
    returns = np.concatenate([[0.0], np.cumsum(rewards[:length])])
    return [f"t={t}/{length} return={returns[t]:.2f}" for t in range(length + 1)]


def _inner(states: Any, field: str) -> Any:
    """The JaxMARL state inside the adapter's ``EnvState``: the first ``.inner`` /
    ``.state`` level that has ``field`` (SMAX's heuristic-enemy wrapper nests one more)."""
    node = states.inner
    for _ in range(4):
        if hasattr(node, field):
            return node
        node = getattr(node, "state", None)
        if node is None:
            break
    raise MeigmError(f"cannot find the environment's {field!r} in its state; renderer and env disagree")


def render_smax(env: Env, states: Any, rewards: np.ndarray, length: int) -> list[Image]:
    """SMAX battle, top view. ``states.inner`` is the heuristic-enemy wrapper state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    smax = env.env._env  # HeuristicEnemySMAX wraps the SMAX world
    world = _inner(states, "unit_positions")
    pos = np.asarray(world.unit_positions)  # [T+1, U, 2]
    alive = np.asarray(world.unit_alive)  # [T+1, U]
    health = np.asarray(world.unit_health)  # [T+1, U]
    types = np.asarray(world.unit_types)  # [T+1, U]
    attacks = np.asarray(world.prev_attack_actions)  # [T+1, U] raw action, 0 when moving
    radius = np.asarray(smax.unit_type_radiuses)
    max_health = np.asarray(smax.unit_type_health)
    shorthand = list(smax.unit_type_shorthands)
    n_allies, n_move = int(smax.num_allies), int(smax.num_movement_actions)
    captions = _captions(rewards, length)

    fig = Figure(figsize=(4.0, 4.0), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96))
    frames = []
    for t in range(length + 1):
        ax.clear()
        ax.set_xlim(0, float(smax.map_width))
        ax.set_ylim(0, float(smax.map_height))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for u in np.flatnonzero(alive[t]):
            a = int(attacks[t, u])
            if a >= n_move:  # SMAX's target indexing: enemies are listed in reverse for team 1
                target = a - n_move + n_allies if u < n_allies else n_allies - 1 - (a - n_move)
                ax.plot(*zip(pos[t, u], pos[t, target], strict=True), color="0.4", lw=0.8, zorder=1)
        for u in np.flatnonzero(alive[t]):
            colour = "tab:blue" if u < n_allies else "tab:red"
            frac = float(np.clip(health[t, u] / max_health[types[t, u]], 0.0, 1.0))
            ax.add_patch(Circle(tuple(pos[t, u]), float(radius[types[t, u]]), color=colour,
                                alpha=0.3 + 0.7 * frac, zorder=2))
            ax.text(*pos[t, u], shorthand[types[t, u]], fontsize=6, ha="center", va="center",
                    color="white", zorder=3)
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
        frames.append(_caption(rgb, captions[t]))
    return frames


def render_overcooked(env: Env, states: Any, rewards: np.ndarray, length: int) -> list[Image]:
    """Overcooked kitchen grid; ``states.inner`` is JaxMARL's Overcooked ``State``."""
    from jaxmarl.viz.overcooked_visualizer import TILE_PIXELS, OvercookedVisualizer

    inner_env = getattr(env, "env", env)
    kitchen = _inner(states, "maze_map")
    pad = int(inner_env.agent_view_size) - 2  # maze_map is padded for the agents' views
    maze = np.asarray(kitchen.maze_map)  # [T+1, H + 2 pad, W + 2 pad, 3]
    dirs = np.asarray(kitchen.agent_dir_idx)  # [T+1, 2]
    inv = np.asarray(kitchen.agent_inv)  # [T+1, 2]
    captions = _captions(rewards, length)
    frames = []
    for t in range(length + 1):
        grid = maze[t, pad:-pad, pad:-pad] if pad > 0 else maze[t]
        rgb = OvercookedVisualizer._render_grid(grid, tile_size=TILE_PIXELS, highlight_mask=None,
                                                agent_dir_idx=dirs[t], agent_inv=inv[t])
        frames.append(_caption(rgb, captions[t]))
    return frames


#: Environment family (the part of a scenario name before ':') -> renderer.
RENDERERS: dict[str, Renderer] = {"smax": render_smax, "overcooked": render_overcooked}


def renderer_for(env_name: str) -> Renderer:
    """The renderer of a scenario's family; a user error naming those that have one."""
    family = env_name.split(":", 1)[0]
    if family not in RENDERERS:
        raise MeigmError(
            f"cannot render {env_name}: no renderer for the {family!r} family; "
            f"renderers exist for: {', '.join(RENDERERS)}"
        )
    return RENDERERS[family]


def check_gif_path(path: str | Path) -> Path:
    """A writable ``.gif`` path; checked before any roll-out so a typo costs nothing."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise MeigmError(f"--render writes a GIF; give a file name ending in .gif, got {path}")
    if not path.parent.is_dir():
        raise MeigmError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def write_gif(frames: list[Image], path: str | Path, fps: float = 5.0) -> Path:
    """Write an animated GIF (looping) atomically: a temporary file, then a rename."""
    if not frames:
        raise MeigmError("no frames to write")
    path = check_gif_path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(1000 / fps), loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
