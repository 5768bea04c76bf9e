"""``meigm.cpu_flags``: YNNPACK's multiply-reduce fusions off on XLA:CPU, set on import."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from meigm import YNN_REDUCE_OFF, cpu_flags


def test_appends_to_the_users_flags_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    cpu_flags(env, "0.10.2")
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {YNN_REDUCE_OFF}"
    cpu_flags(env, "0.10.2")  # a second import changes nothing
    assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1
    empty: dict[str, str] = {}
    cpu_flags(empty, "0.11.2")
    assert empty == {"XLA_FLAGS": YNN_REDUCE_OFF}


@pytest.mark.parametrize("version", ["0.4.30", "0.9.9", "not-a-version"])
def test_an_older_or_unknown_jaxlib_gets_nothing(version):
    env = {"XLA_FLAGS": "--foo"}
    cpu_flags(env, version)
    assert env == {"XLA_FLAGS": "--foo"}  # it would abort on a flag it does not know


def test_a_users_own_ynn_setting_is_kept():
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+reduce"}
    cpu_flags(env, "0.10.2")
    assert env == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+reduce"}


_PROBE = """
import jax, jax.numpy as jnp
import meigm  # after jax, as a user's script may: the flag must still reach XLA
x = jax.ShapeDtypeStruct((1, 64, 6, 32), jnp.float32)  # a unit dimension, as under one seed
print(jax.jit(lambda a, b: jnp.sum(a * b, axis=2)).lower(x, x).compile().as_text())
"""


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU flag")
def test_xla_cpu_compiles_the_reduce_without_ynnpack_after_import_meigm():
    """The flag reaches XLA (set on ``import meigm``, before the backend starts), and it
    is what keeps the multiply-reduce out of YNNPACK: with the user's opt-out the same
    program is a YNN fusion."""

    if YNN_REDUCE_OFF not in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("XLA_FLAGS sets the YNN fusion types itself, or jaxlib < 0.10")

    def compiled(xla_flags: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if xla_flags is not None:
            env["XLA_FLAGS"] = xla_flags
        return subprocess.run([sys.executable, "-c", _PROBE], env=env, check=True,
                              capture_output=True, text=True).stdout

    assert "__ynn_fusion" not in compiled(None)
    assert "__ynn_fusion" in compiled("--xla_cpu_experimental_ynn_fusion_type=+reduce")
