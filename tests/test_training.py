"""The shared Lightning plumbing, on a toy regression so it runs in seconds."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gac.schema import TrainingParams
from gac.training import ResumeState, build_trainer, cosine_with_warmup, restore_best


def toy_module():
    import lightning.pytorch as pl

    class Toy(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Toy()


def data(n=40):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return TensorDataset(x, x.sum(1, keepdim=True))


def test_warmup_then_cosine_schedule_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = cosine_with_warmup(optimizer, warmup_steps=3, total_steps=13)
    factors = [schedule.lr_lambdas[0](step) for step in (0, 2, 3, 8, 13)]
    assert factors == pytest.approx([0.25, 0.75, 1.0, 0.5, 0.0])


def test_a_run_shorter_than_an_epoch_still_validates_and_keeps_a_best_checkpoint(tmp_path):
    train = TrainingParams(batch_size=4, max_steps=3, max_epochs=5, accelerator="cpu")
    trainer = build_trainer(train, tmp_path / "ckpt", tmp_path / "live", batches_per_epoch=10)
    trainer.fit(toy_module(), DataLoader(data(), batch_size=4), DataLoader(data(8), batch_size=4))
    assert trainer.global_step == 3
    assert "val/loss" in trainer.callback_metrics
    assert (tmp_path / "ckpt" / "best.ckpt").is_file() and (tmp_path / "ckpt" / "last.ckpt").is_file()
    logged = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert "val" in logged and "loss" in logged["val"]


def test_resume_only_with_the_same_params_hash(tmp_path):
    state = ResumeState("toy", "hash-a", root=tmp_path)
    assert state.prepare() is None
    (state.dir / "last.ckpt").write_bytes(b"checkpoint")
    assert ResumeState("toy", "hash-a", root=tmp_path).prepare() == state.dir / "last.ckpt"
    other = ResumeState("toy", "hash-b", root=tmp_path)
    assert other.prepare() is None and not (state.dir / "last.ckpt").exists()


def test_a_finished_run_is_never_resumed(tmp_path):
    state = ResumeState("toy", "hash-a", root=tmp_path)
    state.prepare()
    (state.dir / "last.ckpt").write_bytes(b"checkpoint")
    state.finish()
    assert (state.dir / "last.ckpt").is_file()  # kept for inspection...
    assert ResumeState("toy", "hash-a", root=tmp_path).prepare() is None  # ...but a forced re-run starts over


def test_step_plots_count_from_zero_without_a_stray_first_row(tmp_path):
    # dvclive alone writes 2, 1, 2, 3 (step 0 read as "no step"); the rows must be 0, 1, 2, ... once each
    train = TrainingParams(batch_size=4, max_steps=5, max_epochs=5, accelerator="cpu", warmup_steps=0)
    trainer = build_trainer(train, tmp_path / "ckpt", tmp_path / "live", batches_per_epoch=10)

    class Logged(type(toy_module())):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("train/loss", loss, on_step=True, on_epoch=False)
            return loss

    trainer.fit(Logged(), DataLoader(data(), batch_size=4), DataLoader(data(8), batch_size=4))
    plots = tmp_path / "live" / "plots" / "metrics"
    for tsv in (plots / "train" / "loss.tsv", plots / "lr-SGD.tsv"):
        steps = [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:]]
        assert steps == [0, 1, 2, 3, 4], (tsv.name, steps)


@pytest.mark.parametrize("mode, best_epoch", [("max", 1), ("min", 2)])
def test_best_checkpoint_follows_the_monitor_and_its_direction(tmp_path, mode, best_epoch):
    scores = [0.5, 0.9, 0.1, 0.6]  # what "val/score" reads after each epoch

    class Scored(type(toy_module())):
        def validation_step(self, batch, batch_idx):
            self.log("val/score", torch.tensor(scores[self.current_epoch]))

    train = TrainingParams(batch_size=8, max_epochs=4, accelerator="cpu", early_stopping_patience=5)
    trainer = build_trainer(train, tmp_path / "ckpt", tmp_path / "live", monitor="val/score", mode=mode)
    trainer.fit(Scored(), DataLoader(data(16), batch_size=8), DataLoader(data(8), batch_size=8))
    assert float(trainer.checkpoint_callback.best_model_score) == pytest.approx(scores[best_epoch])
    assert torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=False)["epoch"] == best_epoch


@pytest.mark.parametrize("case", ["scored", "never_validated", "never_finite"])
def test_export_takes_the_best_checkpoint_or_says_it_takes_the_last(tmp_path, case, caplog):
    scores = {"scored": [0.5, 0.1, 0.6], "never_finite": [float("nan")] * 3}.get(case)

    class Scored(type(toy_module())):
        def validation_step(self, batch, batch_idx):
            self.log("val/loss", torch.tensor(scores[self.current_epoch]))

    module = Scored()
    if case == "never_validated":  # max_steps ends training inside the first epoch, and nothing moves validation there
        train = TrainingParams(batch_size=4, max_steps=2, max_epochs=3, accelerator="cpu")
    else:
        train = TrainingParams(batch_size=8, max_epochs=3, accelerator="cpu", early_stopping_patience=5)
    trainer = build_trainer(train, tmp_path / "ckpt", tmp_path / "live")
    trainer.fit(module, DataLoader(data(16), batch_size=train.batch_size), DataLoader(data(8), batch_size=8))
    last = {k: v.clone() for k, v in module.state_dict().items()}
    with caplog.at_level("WARNING", logger="gac.training"):
        selected = restore_best(trainer, module, module.load_state_dict, "val/loss", "min")
    if case == "scored":
        best = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=False)
        assert best["epoch"] == 1 and selected == {"monitor": "val/loss", "mode": "min", "best": pytest.approx(0.1)}
        assert all(torch.equal(v, best["state_dict"][k]) for k, v in module.state_dict().items())
        assert not any(torch.equal(v, last[k]) for k, v in module.state_dict().items())  # other weights than the last
        assert "no best checkpoint" not in caplog.text
        return
    why = "validation never ran" if case == "never_validated" else "validation never gave val/loss a finite value"
    assert selected == {"monitor": "val/loss", "mode": "min", "best": None, "checkpoint": "last", "why": why}
    assert all(torch.equal(v, last[k]) for k, v in module.state_dict().items())
    assert f"no best checkpoint ({why}): exporting the weights of the last step" in caplog.text
