"""The configuration system: defaults, updates, validation, round trips, builders."""

import copy

import pytest
import torch
from transformers import GPT2Config

from textrl import ConfigError, TRLConfig, default_config, default_ilql_config, load_yaml, save_yaml
from textrl.config import (
    METHODS,
    CQLConfig,
    FilteredBCConfig,
    ILQLConfig,
    OptimizerConfig,
    SchedulerConfig,
)
from textrl.optim import build_optimizer, build_scheduler

SEED_VALUES = {
    "train.seq_length": 64,
    "train.batch_size": 128,
    "train.epochs": 100,
    "train.total_steps": 1000,
    "train.checkpoint_interval": 1000,
    "train.eval_interval": 100,
    "train.reward_normalization": "zscore",  # trlx's ILQL trainer z-scores the returns
    "model.model_path": "gpt2",
    "model.num_layers_unfrozen": -1,
    "tokenizer.tokenizer_path": "gpt2",
    "tokenizer.truncation_side": "right",
    "optimizer.name": "adamw",
    "optimizer.kwargs": {"lr": 5e-5, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-6},
    "scheduler.name": "cosine_annealing",
    "scheduler.kwargs": {"T_max": 1e12, "eta_min": 5e-5},
    "method.tau": 0.7,
    "method.gamma": 0.99,
    "method.cql_scale": 0.1,
    "method.awac_scale": 1,
    "method.alpha": 0.001,
    "method.beta": 0,
    "method.awac_weight_max": None,
    "method.steps_for_target_q_sync": 5,
    "method.two_qs": True,
    "method.gen_kwargs.max_new_tokens": 56,
    "method.gen_kwargs.top_k": 20,
    "method.gen_kwargs.beta": 1,
    "method.gen_kwargs.temperature": 1.0,
}


def _get(config: object, dotted: str) -> object:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("key,value", SEED_VALUES.items())
def test_default_values(key: str, value: object) -> None:
    assert _get(default_ilql_config(), key) == value


def test_default_is_ilql_and_fresh_each_call() -> None:
    a, b = default_ilql_config(), default_ilql_config()
    assert isinstance(a.method, ILQLConfig) and a == b and a is not b
    assert a.optimizer.kwargs is not b.optimizer.kwargs


def test_dotted_and_nested_updates_merge_deeply() -> None:
    base = default_ilql_config()
    new = base.update({"method.tau": 0.8, "train.batch_size": 64})
    assert (new.method.tau, new.train.batch_size) == (0.8, 64)
    nested = base.evolve(method=dict(gamma=0.9, gen_kwargs=dict(max_new_tokens=100)), train=dict(batch_size=32))
    assert nested.method.gamma == 0.9
    assert nested.method.gen_kwargs.max_new_tokens == 100
    assert nested.method.gen_kwargs.top_k == 20  # untouched sibling kept
    assert nested.train.batch_size == 32 and nested.train.seq_length == 64
    opt = base.update({"optimizer.kwargs.lr": 1e-3})
    assert opt.optimizer.kwargs == {**base.optimizer.kwargs, "lr": 1e-3}


def test_update_and_evolve_never_mutate_their_input() -> None:
    base = default_ilql_config()
    snapshot = copy.deepcopy(base.to_dict())
    changes = {"method": {"gen_kwargs": {"top_k": 3}}, "optimizer": {"kwargs": {"lr": 1.0}}}
    changes_copy = copy.deepcopy(changes)
    base.update(changes)
    base.evolve(**changes)
    assert base.to_dict() == snapshot
    assert changes == changes_copy


@pytest.mark.parametrize(
    "changes,path",
    [
        ({"trian": {}}, "trian"),
        ({"train.batchsize": 4}, "train.batch_size"),
        ({"method.gen_kwargs.max_tokens": 4}, "method.gen_kwargs.max_tokens"),
        ({"optimizer.kwargs.lrate": 4}, "optimizer.kwargs.lrate"),
    ],
)
def test_unknown_keys_rejected_at_every_depth(changes: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        default_ilql_config().update(changes)
    wanted = path if "batchsize" not in str(changes) else "train.batchsize"
    assert f"'{wanted}'" in str(err.value)
    assert "Valid keys here" in str(err.value)


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'batch_size'"):
        default_ilql_config().evolve(train=dict(batchsize=3))


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"train.batch_size": "64"}, "train.batch_size: expected int"),
        ({"train.batch_size": 0}, "train.batch_size"),
        ({"train.total_steps": 0}, "train.total_steps"),
        ({"train.seq_length": 1.5}, "train.seq_length: expected int"),
        ({"train.minibatch_size": 7}, "must divide train.batch_size"),
        ({"optimizer.kwargs.lr": -1e-4}, "learning rate must be a positive"),
        ({"optimizer.name": "adagrad_x"}, "unknown optimizer"),
        ({"scheduler.name": "warmup"}, "unknown scheduler"),
        ({"method.tau": 1.0}, "method.tau"),
        ({"method.tau": 0.0}, "method.tau"),
        ({"method.gamma": 1.5}, "method.gamma"),
        ({"method.gamma": -0.1}, "method.gamma"),
        ({"method.gen_kwargs.max_new_tokens": 0}, "method.gen_kwargs.max_new_tokens"),
        ({"method.gen_kwargs.temperature": -1.0}, "method.gen_kwargs.temperature"),
        ({"method.two_qs": "yes"}, "method.two_qs: expected bool"),
        ({"model.model_arch_type": "encoder"}, "model.model_arch_type"),
        ({"model.model_path": 3}, "model.model_path"),
        ({"train.tracker": "wandb"}, "train.tracker"),
    ],
)
def test_bad_values_rejected_with_their_path(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        default_ilql_config().update(changes)
    assert fragment in str(err.value)


def test_beta_may_be_a_sweep_list() -> None:
    cfg = default_ilql_config().update({"method.gen_kwargs.beta": [0, 1, 4]})
    assert cfg.method.gen_kwargs.beta == [0.0, 1.0, 4.0]


def test_dict_round_trip_is_exact_and_deep_copied() -> None:
    cfg = default_ilql_config().evolve(method=dict(tau=0.9), train=dict(seed=3))
    plain = cfg.to_dict()
    assert plain["method"]["name"] == "ilql"
    again = TRLConfig.from_dict(plain)
    assert again == cfg
    plain["optimizer"]["kwargs"]["lr"] = 1.0
    assert cfg.optimizer.kwargs["lr"] == 5e-5


def test_round_trip_with_a_transformers_config_model(tmp_path) -> None:
    tiny = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20, bos_token_id=1, eos_token_id=1)
    cfg = default_ilql_config().evolve(model=dict(model_path=tiny))
    assert TRLConfig.from_dict(cfg.to_dict()) == cfg
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == cfg


def test_yaml_round_trip_and_readable_str(tmp_path) -> None:
    cfg = default_config("filtered_bc").evolve(method=dict(fraction=0.25))
    path = tmp_path / "sub" / "config.yaml"
    save_yaml(cfg, path)
    loaded = load_yaml(path)
    assert loaded == cfg and isinstance(loaded.method, FilteredBCConfig)
    text = str(cfg)
    assert "fraction: 0.25" in text and "name: filtered_bc" in text


def test_yaml_that_does_not_parse_names_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_yaml_with_unknown_section_or_method(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training: {seed: 1}\n")
    with pytest.raises(ConfigError, match="unknown config key 'training'"):
        load_yaml(path)
    path.write_text("method: {name: ppo}\n")
    with pytest.raises(ConfigError, match="unknown method"):
        load_yaml(path)


def test_method_registry_has_every_agent() -> None:
    assert {"ilql", "bc", "filtered_bc", "mc_returns", "cql"} <= set(METHODS)
    assert isinstance(default_config("cql").method, CQLConfig)


def test_ilql_default_is_trlx_and_task_presets_are_explicit() -> None:
    trlx = default_ilql_config()
    assert default_config("ilql") == trlx
    assert trlx.train.reward_normalization == "zscore" and trlx.method.target_update_rate == 0.001
    # trlx's target rate: 0.001 every 5 steps moves the targets 1 - 0.999^200, about 18%, in 1000 steps
    assert 1 - (1 - trlx.method.alpha) ** (1000 // trlx.method.steps_for_target_q_sync) == pytest.approx(0.181, abs=1e-3)
    from textrl import task_config

    for task in ("randomwalks", "maze"):
        preset = task_config(task, "ilql")
        assert preset.train.reward_normalization == "none"  # the benchmark trains on the stored returns
        assert (preset.method.alpha, preset.method.tau) == (0.1, 0.8)


def test_a_task_presets_minibatch_count_follows_a_batch_size_you_pass() -> None:
    from textrl import task_config

    preset = task_config("endgames", "bc").train
    assert (preset.batch_size, preset.grad_accumulation_steps) == (32, 8)
    assert task_config("endgames", "bc", batch_size=16).train.minibatch_size == 2  # still 8 minibatches
    assert task_config("endgames", "bc", batch_size=12).train.minibatch_size is None  # 8 does not divide 12
    assert task_config("endgames", "bc", batch_size=12, minibatch_size=6).train.minibatch_size == 6
    assert task_config("maze", "bc", batch_size=12).train.minibatch_size is None


def test_cql_names_its_target_rate_and_conservative_weight() -> None:
    cql = CQLConfig()
    assert (cql.target_update_rate, cql.cql_scale) == (0.1, 1.0)
    with pytest.raises(ConfigError, match="method.target_update_rate = 1.5: must lie in"):
        CQLConfig(target_update_rate=1.5)
    with pytest.raises(ConfigError, match="unknown config key 'method.alpha'.*target_update_rate"):
        default_config("cql").update({"method.alpha": 0.1})


def test_awac_weight_max_is_optional_and_positive() -> None:
    assert ILQLConfig().awac_weight_max is None
    assert ILQLConfig(awac_weight_max=100).awac_weight_max == 100.0
    with pytest.raises(ConfigError, match="method.awac_weight_max = 0.0: must be positive"):
        ILQLConfig(awac_weight_max=0.0)


def test_optimizer_and_scheduler_built_from_config() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    cfg = default_ilql_config()
    opt = build_optimizer(params, cfg.optimizer)
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["lr"] == 5e-5 and group["betas"] == (0.9, 0.95) and group["weight_decay"] == 1e-6
    sched = build_scheduler(opt, cfg.scheduler)
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 1e12
    assert group["fused"] is True  # torch's one-pass kernel, unless the config chooses
    chosen = build_optimizer(params, OptimizerConfig(kwargs={"lr": 1e-3, "foreach": True}))
    assert chosen.param_groups[0]["foreach"] is True and not chosen.param_groups[0]["fused"]
    groups = build_optimizer([{"params": params, "lr": 0.5}], cfg.optimizer)
    assert groups.param_groups[0]["fused"] is True and groups.param_groups[0]["lr"] == 0.5
    elsewhere = build_optimizer([torch.nn.Parameter(torch.zeros(3, device="meta"))], cfg.optimizer)
    assert not elsewhere.param_groups[0]["fused"]  # no fused kernel there: torch's default implementation
    sgd = build_optimizer(params, OptimizerConfig(name="sgd", kwargs={"lr": 0.1}))
    assert isinstance(sgd, torch.optim.SGD)
    for name, cls in [("linear", torch.optim.lr_scheduler.LinearLR), ("constant", torch.optim.lr_scheduler.ConstantLR)]:
        sc = build_scheduler(sgd, SchedulerConfig(name=name, kwargs={}))
        assert isinstance(sc, cls)
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.1 / 3)  # LinearLR starts at a third


def test_changing_optimizer_name_starts_its_kwargs_afresh() -> None:
    cfg = default_ilql_config().update({"optimizer.name": "sgd", "optimizer.kwargs.lr": 0.5})
    assert cfg.optimizer.kwargs == {"lr": 0.5}  # AdamW's betas/eps do not carry over to SGD
    sched = default_ilql_config().evolve(scheduler=dict(name="constant"))
    assert sched.scheduler.kwargs == {}
    with pytest.raises(ConfigError, match="optimizer.kwargs.betas"):
        default_ilql_config().update({"optimizer.name": "sgd", "optimizer.kwargs.betas": [0.9, 0.9]})


def test_the_default_config_prints_its_values() -> None:
    out = str(default_ilql_config())  # what `textrl config` prints (its console script: test_readme_cli)
    assert "batch_size: 128" in out and "tau: 0.7" in out and "max_new_tokens: 56" in out


def test_switching_to_a_scheduler_that_needs_kwargs_takes_them_in_the_same_change() -> None:
    from textrl import task_config

    constant = task_config("randomwalks", "ilql")  # a constant schedule, no kwargs
    cosine = constant.evolve(scheduler=dict(name="cosine_annealing", kwargs=dict(T_max=10, eta_min=1e-5)))
    assert (cosine.scheduler.name, cosine.scheduler.kwargs) == ("cosine_annealing", {"T_max": 10, "eta_min": 1e-5})
    assert cosine.evolve(scheduler=dict(name="constant")).scheduler.kwargs == {}  # the old kwargs are dropped
