"""What produced a run: meigm's version and commit, the libraries its numbers depend on,
the platform and the device (issue 41 item 8).

A run's figures depend on more than its config: JaxMARL 0.2.0 changed SMAX's dynamics and
observations (dead units stopped moving and colliding; two observation features were
normalised), and jax/jaxlib change XLA's numerics and speed. Every run directory
(``config.yaml``'s sibling ``provenance.json``, and ``results.json``) and every checkpoint
records :func:`provenance`, and ``meigm eval`` prints it, so a figure can be traced to the
code and libraries that made it months later. ``constraints.txt`` at the repository root
pins the versions the committed benchmarks were measured with.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

#: The distributions whose versions a run records: the numerics (jax, jaxlib, flax, optax,
#: numpy), the simulators (jaxmarl, gymnasium) and meigm itself.
PACKAGES = ("meigm", "jax", "jaxlib", "flax", "optax", "jaxmarl", "numpy", "gymnasium")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """{distribution: installed version, or None when it is not installed}."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


#: meigm's source checkout, if it runs from one.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def git_commit(root: Path = SOURCE_ROOT) -> dict[str, Any] | None:
    """The commit meigm's source was checked out at and whether its tracked files had
    uncommitted changes, or None when meigm is not running from a git work tree (an
    installed wheel) or git is missing."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        if git("rev-parse", "--show-toplevel") != str(root):
            return None  # meigm installed inside some other repository
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def device_description() -> dict[str, Any]:
    """JAX's backend and its devices, read from the backend already started (this starts
    it if nothing has)."""
    import jax

    devices = jax.devices()
    return {"backend": jax.default_backend(), "count": len(devices),
            "kind": sorted({d.device_kind for d in devices})}


def provenance(device: bool = True) -> dict[str, Any]:
    """Everything :mod:`meigm.provenance` records, JSON-serialisable."""
    out: dict[str, Any] = {
        "meigm": package_versions(("meigm",))["meigm"],
        "git": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if device:
        out["device"] = device_description()
    return out


def describe(prov: dict[str, Any] | None) -> str:
    """One line for people: meigm's version and commit, the key libraries, the device."""
    if not prov:
        return "provenance: not recorded (a run made before meigm recorded it)"
    git = prov.get("git") or {}
    commit = (git.get("commit", "")[:10] + ("+changes" if git.get("dirty") else "")) if git else "no git"
    libs = ", ".join(f"{k} {v}" for k, v in (prov.get("packages") or {}).items() if k != "meigm" and v)
    dev = prov.get("device") or {}
    where = f"{dev.get('backend', '?')} ({', '.join(dev.get('kind', []))})" if dev else "?"
    return (f"provenance: meigm {prov.get('meigm')} at {commit}; {libs}; python {prov.get('python')}; "
            f"{prov.get('platform')}; device {where}")


def recorded(run_dir: Path) -> dict[str, Any] | None:
    """The provenance a run directory recorded: its last leg in ``provenance.json``, else
    ``results.json``'s, else None (a run made before meigm recorded it)."""
    import json

    for name, pick in (("provenance.json", lambda d: d[-1] if isinstance(d, list) and d else None),
                       ("results.json", lambda d: d.get("provenance") if isinstance(d, dict) else None)):
        path = Path(run_dir) / name
        try:
            found = pick(json.loads(path.read_text())) if path.is_file() else None
        except (OSError, ValueError):
            found = None
        if found:
            return found
    return None


def check_constraints(path: Path) -> list[str]:
    """The pins of a constraints file (``name==version`` lines) that the installed packages
    do not meet: one line each, naming the package, the pin and what is installed."""
    problems = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            problems.append(f"{path}: {line!r} is not a name==version pin")
            continue
        name, version = (x.strip() for x in line.split("==", 1))
        installed = package_versions((name,))[name]
        if installed != version:
            problems.append(f"{name}: pinned {version}, installed {installed or 'nothing'}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m meigm.provenance``: print this environment's provenance;
    ``--check constraints.txt``: exit 1 naming every pin the environment does not meet."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m meigm.provenance", description=main.__doc__)
    p.add_argument("--check", type=Path, default=None, metavar="CONSTRAINTS")
    a = p.parse_args(argv)
    if a.check is None:
        print(json.dumps(provenance(), indent=1))
        return 0
    if not a.check.is_file():
        print(f"error: no such constraints file: {a.check}", file=sys.stderr)
        return 2
    problems = check_constraints(a.check)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{a.check}: {'every pin met' if not problems else f'{len(problems)} pin(s) not met'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
