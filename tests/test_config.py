"""Experiment configuration (``meigm.config``).

Guards the user-facing contract of configs: every mistake (unknown key, wrong type,
non-positive size, out-of-range probability, unknown algorithm or transform, a batch
bigger than the buffer, a missing or malformed preset) is a ``ConfigError`` whose message
names the offending key or value, ``key=value`` overrides parse as YAML scalars/lists
with dotted paths into ``env_args``, presets are overridden by fields and overrides in
that order, and ``Config.resolve`` fills the environment-dependent defaults.
"""

from __future__ import annotations

import dataclasses

import pytest

from meigm.config import Config, build, from_dict, load_yaml, parse_overrides
from meigm.errors import ConfigError, MeigmError


def test_defaults_are_valid_and_frozen():
    cfg = from_dict({})
    assert cfg == Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1  # type: ignore[misc]


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        from_dict({"lr_rate": 0.1})
    msg = str(err.value)
    assert "'lr_rate'" in msg
    assert "Valid keys:" in msg and "lr" in msg.split("Valid keys:")[1].split(", ")


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("batchsize", "batch_size"), ("gama", "gamma"), ("sed", "seed")]
)
def test_unknown_key_suggests_close_matches(typo, suggestion):
    with pytest.raises(ConfigError, match=rf"'{typo}'.*Did you mean: .*\b{suggestion}\b"):
        from_dict({typo: 1})


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, MeigmError)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", "x"),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("lr", True),
        ("lr", "fast"),
        ("learn_alpha", 1),
        ("alg", 3),
        ("env_args", [1, 2]),
        ("mixer", 1),
    ],
)
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' must be"):
        from_dict({key: value})


def test_ints_are_accepted_for_floats_and_none_for_optionals():
    cfg = from_dict({"lr": 1, "t_max": None, "opt_lr": None, "mixer": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.t_max is None and cfg.opt_lr is None and cfg.mixer is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("batch_size", 0), ("seeds", -1), ("lr", 0.0), ("t_max", 0), ("opt_lr", -1e-3)],
)
def test_non_positive_sizes_are_rejected(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' must be positive"):
        from_dict({key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [("gamma", 1.5), ("gamma", -0.1), ("td_lambda", 2), ("epsilon_finish", -0.01)],
)
def test_probabilities_outside_unit_interval_are_rejected(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' must be in \[0, 1\]"):
        from_dict({key: value})


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_unit_interval_is_closed(value):
    assert from_dict({"gamma": value}).gamma == value


def test_unknown_algorithm_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        from_dict({"alg": "maddpg"})
    msg = str(err.value)
    assert "'maddpg'" in msg
    for alg in ("me_qmix", "me_vdn", "qmix", "vdn"):
        assert alg in msg


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("transform", "relu", ("opt", "none", "mlp")),
        ("mixer", "qatten", ("vdn", "qmix", "qplex")),
        ("target_update", "soft", ("hard", "polyak")),
        ("alpha_loss", "mean", ("exact", "sampled")),
    ],
)
def test_unknown_choices_are_rejected(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        from_dict({key: value})
    msg = str(err.value)
    assert f"'{value}'" in msg and key in msg
    assert all(a in msg for a in allowed)


def test_opt_layers_must_be_one_or_two():
    assert from_dict({"opt_layers": 1}).opt_layers == 1
    with pytest.raises(ConfigError, match="opt_layers"):
        from_dict({"opt_layers": 3})


def test_batch_larger_than_buffer_is_rejected():
    assert from_dict({"batch_size": 16, "buffer_size": 16}).batch_size == 16
    with pytest.raises(ConfigError, match=r"batch_size \(32\).*buffer_size \(16\)"):
        from_dict({"batch_size": 32, "buffer_size": 16})


def test_missing_preset_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(missing)
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        build(missing)


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\nbatch_size: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)


def test_yaml_list_is_rejected(tmp_path):
    listy = tmp_path / "list.yaml"
    listy.write_text("- lr: 0.1\n- batch_size: 3\n")
    with pytest.raises(ConfigError, match=r"must be a mapping.*list"):
        build(listy)


def test_empty_yaml_is_an_empty_preset(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    assert load_yaml(empty) == {}
    assert build(empty) == Config()


def test_unknown_key_in_preset_is_rejected(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("lr_rate: 0.1\n")
    with pytest.raises(ConfigError, match="'lr_rate'"):
        build(preset)


def test_parse_overrides_types():
    parsed = parse_overrides(
        ["batch_size=32", "lr=0.0005", "learn_alpha=false", "gamma=1", "alg=vdn",
         "env_args.payoff=[[1, 2], [3, 4]]", "env_args.steps=3", "mixer=null", "env=a=b"]
    )
    assert parsed == {
        "batch_size": 32,
        "lr": 0.0005,
        "learn_alpha": False,
        "gamma": 1,
        "alg": "vdn",
        "env_args": {"payoff": [[1, 2], [3, 4]], "steps": 3},
        "mixer": None,
        "env": "a=b",
    }
    assert isinstance(parsed["batch_size"], int) and isinstance(parsed["lr"], float)


def test_parse_overrides_nested_dotted_path():
    assert parse_overrides(["env_args.a.b=true"]) == {"env_args": {"a": {"b": True}}}


def test_parse_overrides_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["batch_size"])
    with pytest.raises(ConfigError, match="dotted"):
        parse_overrides(["lr.x=3"])
    with pytest.raises(ConfigError, match="dotted"):
        parse_overrides(["nope.x=3"])


def test_overrides_are_validated():
    assert build(None, ["batch_size=32", "buffer_size=64"]).batch_size == 32
    with pytest.raises(ConfigError, match="'batch_size' must be"):
        build(None, ["batch_size=x"])
    with pytest.raises(ConfigError, match="'lr_rate'"):
        build(None, ["lr_rate=0.1"])


def test_exponent_notation_floats_parse(tmp_path):
    # YAML 1.1 reads 1e-3 (no decimal point) as a string; float fields accept it.
    assert build(None, ["lr=1e-3"]).lr == pytest.approx(1e-3)
    preset = tmp_path / "p.yaml"
    preset.write_text("alpha_lr: 3e-4\n")
    assert build(preset).alpha_lr == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="'lr' must be float"):
        build(None, ["lr=fast"])


def test_n_envs_cannot_exceed_buffer():
    with pytest.raises(ConfigError, match="n_envs"):
        build(None, ["n_envs=64", "buffer_size=32", "batch_size=8"])


def test_the_buffer_and_minibatch_limits_bind_only_the_learners_that_use_them():
    """The PPO family has no replay buffer and the replay learners no PPO minibatches: a
    limit of one must not refuse the other's config."""
    cfg = build(None, ["n_envs=64", "buffer_size=32", "batch_size=128"], alg="mappo")
    assert cfg.n_envs == 64
    assert build(None, ["n_envs=6", "ppo_minibatches=4"], alg="qmix").n_envs == 6
    with pytest.raises(ConfigError, match=r"ppo_minibatches \(4\) must divide n_envs \(6\)"):
        build(None, ["n_envs=6", "ppo_minibatches=4"], alg="mappo")


def test_preset_then_fields_then_overrides(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        "alg: vdn\nlr: 0.01\nbatch_size: 8\nbuffer_size: 32\ngamma: 0.5\n"
        "env_args:\n  steps: 2\n  payoff: [[1, 0], [0, 1]]\n"
    )
    cfg = build(preset, ["batch_size=16", "lr=0.002", "env_args.steps=3"], gamma=0.7, seed=None)
    assert cfg.alg == "vdn"  # from the preset only
    assert cfg.buffer_size == 32  # from the preset only
    assert cfg.gamma == 0.7  # a field beats the preset
    assert cfg.batch_size == 16 and cfg.lr == 0.002  # overrides beat the preset
    assert cfg.seed == 0  # a None field leaves the default
    # Dotted overrides merge into the preset's env_args rather than replacing it.
    assert cfg.env_args == {"steps": 3, "payoff": [[1, 0], [0, 1]]}
    # An override also beats an explicit field.
    assert build(preset, ["gamma=0.9"], gamma=0.7).gamma == 0.9


def test_resolve_fills_environment_dependent_defaults():
    cfg = build(None, ["lr=0.002"], alg="me_vdn").resolve(20_000)
    assert cfg.t_max == 20_000
    assert cfg.test_interval == 1_000
    assert cfg.epsilon_anneal_steps == 1_000
    assert cfg.mixer == "vdn"
    assert cfg.opt_lr == 0.002
    assert build(None, alg="qmix").resolve(100).mixer == "qmix"
    # Tiny budgets never resolve to zero intervals.
    tiny = Config().resolve(10)
    assert tiny.test_interval == 1 and tiny.epsilon_anneal_steps == 1


def test_resolve_keeps_explicit_values():
    cfg = build(
        None,
        ["t_max=500", "test_interval=7", "epsilon_anneal_steps=9", "mixer=vdn", "opt_lr=0.3"],
        alg="me_qmix",
    ).resolve(20_000)
    assert (cfg.t_max, cfg.test_interval, cfg.epsilon_anneal_steps) == (500, 7, 9)
    assert cfg.mixer == "vdn" and cfg.opt_lr == 0.3
    # Defaults derive from the config's own t_max, not the environment's.
    derived = build(None, ["t_max=400"]).resolve(20_000)
    assert (derived.t_max, derived.test_interval, derived.epsilon_anneal_steps) == (400, 20, 20)
    # Resolving twice changes nothing.
    assert derived.resolve(99) == derived


def test_scenario_defaults_fill_only_unset_fields():
    from meigm.envs import make_env

    # The paper's App. E: one-layer OPT on the SMAC-v2-like scenarios, target entropy
    # 0.32 per agent for terran and 0.24 for the other races; two layers elsewhere.
    terran = make_env("smax:terran_5_vs_5").spec
    cfg = build(None).resolve(terran.default_t_max, dict(terran.config_defaults))
    assert (cfg.opt_layers, cfg.target_entropy, cfg.alpha_init) == (1, 0.32, 0.01)
    zerg = make_env("smax:zerg_5_vs_5").spec
    assert build(None).resolve(1, dict(zerg.config_defaults)).target_entropy == 0.24
    explicit = build(None, ["opt_layers=2", "target_entropy=0.5"])
    assert explicit.resolve(1, dict(terran.config_defaults)).opt_layers == 2
    assert explicit.resolve(1, dict(terran.config_defaults)).target_entropy == 0.5
    plain = build(None).resolve(1)
    assert (plain.opt_layers, plain.target_entropy, plain.alpha_init) == (2, 0.24, 1.0)


def test_integers_must_fit_the_programs_counters():
    """Issue 41: a budget beyond int32 (the program's env-step counter) or a seed beyond
    uint32 (a PRNG seed; 2**32 would be seed 0 again) is a one-line error naming the key,
    not an OverflowError after compiling."""
    assert from_dict({"t_max": 2**31 - 1}).t_max == 2**31 - 1
    for key in ("t_max", "buffer_size", "epsilon_anneal_steps", "checkpoint_interval"):
        with pytest.raises(ConfigError, match=rf"config key '{key}' must be at most 2147483647"):
            from_dict({key: 2**31})
    assert from_dict({"seed": 2**32 - 3, "seeds": 3}).seed == 2**32 - 3
    with pytest.raises(ConfigError, match=r"'seed' must be at most 4294967293 with seeds=3"):
        from_dict({"seed": 2**32 - 2, "seeds": 3})
    with pytest.raises(ConfigError, match="'seed' must be at most"):
        from_dict({"seed": 10**20})


def test_the_budget_leaves_room_for_the_last_collection():
    from meigm.program import make_program

    # matrix:table1 episodes are 1 step: 4 envs may take a seed 3 steps past t_max
    assert make_program(Config(t_max=2**31 - 4)).cfg.t_max == 2**31 - 4
    with pytest.raises(ConfigError, match=r"'t_max' must be at most 2147483644 on this scenario "
                                          r"with n_envs=4 .* got 2147483645"):
        make_program(Config(t_max=2**31 - 3))


def test_a_key_given_twice_is_an_error_naming_it(tmp_path):
    """Issue 41: YAML keeps the last of two equal keys without a word; a preset whose two
    algorithms share a label would silently lose one."""
    p = tmp_path / "p.yaml"
    p.write_text("lr: 0.001\nbatch_size: 8\nlr: 0.002\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: key 'lr' appears twice \(lines 1 and 3\)"):
        load_yaml(p)
    p.write_text("env_args: {payoff: [[1, 0], [0, 1]], payoff: [[2]]}\n")
    with pytest.raises(ConfigError, match=r"key 'payoff' appears twice \(line 1\)"):
        load_yaml(p)
    with pytest.raises(ConfigError, match=r"override 'env_args=\{a: 1, a: 2\}': key 'a' appears"):
        parse_overrides(["env_args={a: 1, a: 2}"])
    # the same key in different mappings, and a merge key overridden, are fine
    p.write_text("base: &b {lr: 0.1}\nenv_args: {lr: 1}\nother:\n  <<: *b\n  lr: 0.2\n")
    assert load_yaml(p)["other"] == {"lr": 0.2}
