"""The Python API: the README's example runs as written, and its inputs are checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import meigm

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(index: int = 0) -> str:
    """The ``index``-th Python block of the README's "From Python" section."""
    text = README.read_text()
    section = text[text.index("## From Python"):]
    return re.findall(r"```python\n(.*?)```", section, re.S)[index]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    results = namespace["results"]
    assert [rec["t_env"] for rec in results["final"]] == results["t_env"]
    assert all(t >= 2000 for t in results["t_env"])
    assert (tmp_path / "runs/api_example/results.json").is_file()
    assert namespace["again"]["reproduces_log"] is True


def test_readme_grid_example_runs(tmp_path, monkeypatch):
    """The README's grid example, after its first example (whose ``cfg`` it reuses)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(0), "README.md", "exec"), namespace)
    exec(compile(readme_example(1), "README.md", "exec"), namespace)
    grid = namespace["grid"]
    assert list(grid) == ["alpha_lr=0.003", "alpha_lr=0.3"]
    for name, res in grid.items():
        assert (tmp_path / "runs/api_grid" / name / "results.json").is_file()
        assert res["packed"] == {"variants": 2, "lanes": 4}
    alpha = [res["history"][-1]["train/alpha"] for res in grid.values()]
    assert abs(1 - alpha[1]) > abs(1 - alpha[0])  # the faster α learning rate moved α further


def test_train_takes_a_dict_and_resume_checks_the_config(tmp_path):
    values = {"alg": "qmix", "env": "matrix:table1", "seeds": 1, "t_max": 600,
              "test_interval": 300, "batch_size": 4, "buffer_size": 8, "hidden_dim": 8,
              "mixing_embed": 4, "hypernet_embed": 8, "length_buckets": 1}
    res = meigm.train(values, progress=False)
    assert res["config"].alg == "qmix" and "run_dir" not in res
    with pytest.raises(meigm.MeigmError, match="needs the run_dir"):
        meigm.train(None, resume=True)
    with pytest.raises(meigm.ConfigError, match="needs a config"):
        meigm.train(None)
    with pytest.raises(meigm.ConfigError, match=r"must be a meigm\.Config"):
        meigm.train(3)
    with pytest.raises(meigm.ConfigError, match="no_such_key"):
        meigm.train({**values, "no_such_key": 1})


def test_every_public_name_resolves():
    for name in meigm.__all__:
        assert getattr(meigm, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        meigm.nope  # noqa: B018


def test_arguments_of_the_wrong_type_are_one_line_errors(tmp_path):
    """Issue 41: a float episode count raised a TypeError from inside JAX, a scenario name
    given as ``env=`` an AttributeError; both are checked at the door now, before anything
    is built or written."""
    cfg = {"alg": "qmix", "env": "matrix:table1", "t_max": 100}
    with pytest.raises(meigm.MeigmError, match=r"train\(\): env must be an environment object "
                                               r"\(a meigm\.Env\), got the string 'smax:3m'"):
        meigm.train(cfg, env="smax:3m")
    for kwargs, message in [
        ({"run_dir": 3}, r"train\(\): run_dir must be a path or None, got 3 \(int\)"),
        ({"resume": "yes"}, r"train\(\): resume must be True or False, got 'yes'"),
        ({"env": object()}, r"train\(\): env must be a meigm\.Env or None"),
        ({"echo": "print"}, r"train\(\): echo must be a function"),
    ]:
        with pytest.raises(meigm.MeigmError, match=message):
            meigm.train(cfg, **kwargs)
    for kwargs, message in [
        ({"episodes": 2.5}, r"evaluate\(\): episodes must be a positive int or None, got 2\.5 \(float\)"),
        ({"episodes": True}, r"episodes must be a positive int or None, got True \(bool\)"),
        ({"episodes": 0}, r"episodes must be a positive int or None, got 0"),
        ({"checkpoint": 7}, r"evaluate\(\): checkpoint must be a path or None"),
        ({"write": 1}, r"evaluate\(\): write must be True or False, got 1 \(int\)"),
    ]:
        with pytest.raises(meigm.MeigmError, match=message):
            meigm.evaluate(tmp_path, **kwargs)
    with pytest.raises(meigm.MeigmError, match=r"evaluate\(\): run_dir must be a path, got None"):
        meigm.evaluate(None)
    assert list(tmp_path.iterdir()) == []
