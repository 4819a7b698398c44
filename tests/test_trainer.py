"""The shared training loop, on a tiny regression learner (no transformer needed)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from textrl import default_config
from textrl.trainer import NonFiniteLossError, Trainer, find_checkpoint


class Rows:
    """A batch source of random rows with a ragged number of valid 'actions' per row."""

    def __init__(self, n: int = 64, width: int = 5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, width, 3, generator=g)
        self.y = torch.randn(n, width, generator=g)
        lengths = torch.randint(1, width + 1, (n,), generator=g)
        self.mask = torch.arange(width)[None] < lengths[:, None]

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, rows: torch.Tensor) -> TensorDict:
        return TensorDict({"x": self.x[rows], "y": self.y[rows], "action_mask": self.mask[rows]},
                          batch_size=[len(rows)])


class LengthRows(Rows):
    """Rows that know their lengths (as `PackedDataset` does) and say which rows each batch holds."""

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)

    def batch(self, rows: torch.Tensor) -> TensorDict:
        td = super().batch(rows)
        td["row"] = rows
        return td


class Regressor:
    """A learner whose loss is a mean over valid actions, like every agent's."""

    def __init__(self, nan_at_step: int | None = None) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
        self.nan_at_step = nan_at_step
        self.steps_seen: list[int] = []

    def loss(self, model, batch):
        pred = model(batch["x"]).squeeze(-1)
        err = (pred - batch["y"]) ** 2
        mask = batch["action_mask"]
        loss = (err * mask).sum() / mask.sum()
        if self.nan_at_step is not None and len(self.steps_seen) + 1 >= self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"mse": loss.item()}

    def after_optimizer_step(self, model, step):
        self.steps_seen.append(step)

    def save_pretrained(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), Path(directory) / "weights.pt")


def _config(tmp_path, **train):
    base = dict(batch_size=16, total_steps=6, checkpoint_interval=3, eval_interval=2, seed=3,
                checkpoint_dir=str(tmp_path / "run"), progress_bar=False)
    return default_config("bc").evolve(train={**base, **train}, optimizer=dict(kwargs=dict(lr=1e-2)))


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_trains_for_total_steps_and_logs_jsonl(tmp_path) -> None:
    learner = Regressor()
    history = Trainer(learner, Rows(), _config(tmp_path)).train()
    assert learner.steps_seen == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6] and lines == history
    assert all(math.isfinite(r["loss"]) and "lr" in r for r in lines)
    assert find_checkpoint(tmp_path / "run").name == "step_000006"
    assert (tmp_path / "run" / "step_000003" / "agent" / "weights.pt").is_file()


def test_accumulation_weights_each_minibatch_by_its_valid_actions(tmp_path) -> None:
    seen: list[tuple[int, float]] = []  # (valid actions, loss) of every minibatch, in order

    class Recording(Regressor):
        def loss(self, model, batch):
            loss, stats = super().loss(model, batch)
            seen.append((int(batch["action_mask"].sum()), loss.item()))
            return loss, stats

    history = Trainer(Recording(), Rows(), _config(tmp_path, total_steps=3, minibatch_size=4)).train()
    assert len(seen) == 3 * 4
    for step, record in enumerate(history):
        counts, losses = zip(*seen[4 * step:4 * step + 4])
        weights = [n / sum(counts) for n in counts]  # n_i / n: the full batch's mean over valid actions
        assert record["loss"] == pytest.approx(sum(w * x for w, x in zip(weights, losses)), rel=1e-6)  # float32 n
        assert record["mse"] == pytest.approx(record["loss"], rel=1e-6)
        assert record["loss"] != pytest.approx(sum(losses) / 4, rel=1e-6)  # ragged rows: equal weights differ


def test_epochs_cap_the_steps(tmp_path) -> None:
    learner = Regressor()
    Trainer(learner, Rows(n=64), _config(tmp_path, epochs=1, total_steps=100)).train()
    assert learner.steps_seen == [1, 2, 3, 4]  # 64 rows / 16 per batch


@pytest.mark.parametrize("source", [Rows, LengthRows])
def test_gradient_accumulation_matches_the_full_batch(tmp_path, source) -> None:
    full, accum = Regressor(), Regressor()
    full.model[1].p = accum.model[1].p = 0.0  # dropout off: the two runs see different RNG draws
    Trainer(full, source(), _config(tmp_path / "a")).train()
    Trainer(accum, source(), _config(tmp_path / "b", minibatch_size=4)).train()
    for a, b in zip(full.model.parameters(), accum.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_minibatches_hold_the_steps_rows_sorted_by_length(tmp_path) -> None:
    def rows_seen(**train) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []

        class Recording(Regressor):
            def loss(self, model, batch):
                seen.append(batch["row"])
                return super().loss(model, batch)

        Trainer(Recording(), LengthRows(), _config(tmp_path / str(train), total_steps=3, **train)).train()
        return seen

    whole, split = rows_seen(), rows_seen(minibatch_size=4)
    lengths = LengthRows().lengths
    assert len(whole) == 3 and len(split) == 3 * 4
    for step, rows in enumerate(whole):
        minibatches = split[4 * step:4 * step + 4]
        assert sorted(torch.cat(minibatches).tolist()) == sorted(rows.tolist())  # the same rows per step
        assert all(len(m) == 4 for m in minibatches)
        for shorter, longer in zip(minibatches, minibatches[1:]):
            assert lengths[shorter].max() <= lengths[longer].min()
    assert lengths[whole[0]].max() > lengths[whole[0]].min()  # the rows are ragged: sorting had work to do


def test_resume_continues_bit_for_bit(tmp_path) -> None:
    straight = Regressor()
    Trainer(straight, Rows(), _config(tmp_path / "straight")).train()

    first = Regressor()
    Trainer(first, Rows(), _config(tmp_path / "split", total_steps=3)).train()
    resumed = Regressor()  # fresh weights: everything must come from the checkpoint
    cfg = _config(tmp_path / "split", resume_from_checkpoint=str(tmp_path / "split" / "run"))
    Trainer(resumed, Rows(), cfg).train()
    assert resumed.steps_seen == [4, 5, 6]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path) -> None:
    learner = Regressor(nan_at_step=5)
    with pytest.raises(NonFiniteLossError, match="at step 5") as err:
        Trainer(learner, Rows(), _config(tmp_path)).train()
    assert "mse" in str(err.value)
    assert find_checkpoint(tmp_path / "run").name == "step_000003"


def test_batch_larger_than_dataset_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"train.batch_size \(128\) is larger than the dataset \(64 episodes\)"):
        Trainer(Regressor(), Rows(n=64), _config(tmp_path, batch_size=128))


def test_interrupted_checkpoint_write_leaves_previous_one_valid(tmp_path, monkeypatch) -> None:
    learner = Regressor()
    trainer = Trainer(learner, Rows(), _config(tmp_path, total_steps=3))
    trainer.train()

    def broken_save(directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "half.pt").write_bytes(b"x")
        raise KeyboardInterrupt("killed half way")

    learner.save_pretrained = broken_save
    trainer.state.step = 4
    with pytest.raises(KeyboardInterrupt, match="killed half way"):
        trainer.save_checkpoint()
    run = tmp_path / "run"
    assert find_checkpoint(run).name == "step_000003"
    assert not (run / "step_000004").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_resume_from_a_folder_without_checkpoint_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = _config(tmp_path, resume_from_checkpoint=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        Trainer(Regressor(), Rows(), cfg).train()


def test_evaluation_is_logged_and_best_is_kept(tmp_path) -> None:
    calls = []

    def eval_fn(num_episodes, seed):
        calls.append(num_episodes)
        score = [10.0, 30.0, 20.0][len(calls) - 1]
        return {"score": np.full(num_episodes, score)}

    history = Trainer(Regressor(), Rows(), _config(tmp_path, eval_episodes=5), eval_fn=eval_fn).train()
    evals = [h for h in history if "eval/score" in h]
    assert [e["step"] for e in evals] == [2, 4, 6] and calls == [5, 5, 5]
    assert [e["eval/score"] for e in evals] == [10.0, 30.0, 20.0]
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best == {"step": 4, "value": 30.0}
