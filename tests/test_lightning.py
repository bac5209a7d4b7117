"""The Lightning callback: a CPU fit on digits grows sparsity, logs the threshold, and resumes exactly."""
import csv

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

L = pytest.importorskip("lightning.pytorch",
                        reason="lightning is not installed (pip install -e '.[lightning]')")
from spikingjelly.activation_based import functional  # noqa: E402

import models  # noqa: E402
from experiments.data import digits  # noqa: E402
from snn_lats.integrations.lightning import SoftThresholdPruning  # noqa: E402


class DigitsSNN(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = models.create_model("sew_resnet18", T=2, neuron_type="lif", stem="cifar", in_channels=1,
                                       num_classes=10, width_multiplier=0.125)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        functional.reset_net(self.net)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _loader():
    train, _ = digits(seed=0)
    return DataLoader(torch.utils.data.Subset(train, range(512)), batch_size=64, shuffle=False)


def _trainer(tmp_path, epochs, callbacks, name, **kwargs):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks,
                     enable_progress_bar=False, enable_model_summary=False,
                     logger=L.loggers.CSVLogger(tmp_path, name=name), log_every_n_steps=1,
                     default_root_dir=tmp_path, deterministic=True, **kwargs)


class Recorder(L.Callback):
    def __init__(self, pruning):
        self.pruning, self.at_train_start = pruning, None

    def on_train_start(self, trainer, pl_module):  # after Lightning restored the checkpoint
        self.at_train_start = (self.pruning.pruner.step_count, self.pruning.pruner.threshold)


def test_fit_grows_sparsity_logs_the_threshold_and_resumes(tmp_path):
    torch.manual_seed(0)
    # 16 steps: 2 epochs
    pruning = SoftThresholdPruning(final_threshold=0.05, ignored_layers=["net.fc"], total_steps=16)
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    model = DigitsSNN()
    _trainer(tmp_path, 1, [pruning, checkpoint], "first").fit(model, _loader())
    steps_per_epoch = 8
    assert pruning.pruner.step_count == steps_per_epoch
    saved_threshold = pruning.pruner.threshold
    sparsity_one_epoch = pruning.pruner.sparsity_report().sparsity
    assert 0 < saved_threshold < 0.05 and sparsity_one_epoch > 0

    with open(tmp_path / "first" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("pruning/threshold")]
    logged = [float(r["pruning/threshold"]) for r in rows]
    assert len(logged) == steps_per_epoch and logged == sorted(logged)
    assert logged[-1] == pytest.approx(saved_threshold)

    # resume for a second epoch from the Lightning checkpoint, in a fresh module and callback
    torch.manual_seed(123)
    resumed = SoftThresholdPruning(final_threshold=0.05, ignored_layers=["net.fc"],
                                   total_steps=2 * steps_per_epoch)
    recorder = Recorder(resumed)
    _trainer(tmp_path, 2, [resumed, recorder], "resumed").fit(DigitsSNN(), _loader(),
                                                              ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert recorder.at_train_start[0] == steps_per_epoch
    assert recorder.at_train_start[1] == saved_threshold
    assert resumed.pruner.step_count == 2 * steps_per_epoch
    assert resumed.pruner.threshold == pytest.approx(0.05)
    assert resumed.pruner.sparsity_report().sparsity > sparsity_one_epoch


@pytest.mark.parametrize("schedule", ["s-lats", "S-LATS", "slats"])
def test_total_steps_defaults_to_the_trainers_estimate(tmp_path, schedule):
    # every spelling build_schedule accepts: the callback asks the schedules module, it keeps no list
    # 2 epochs of 3 batches: the estimate (6) is not the loader's length (8 batches an epoch)
    pruning = SoftThresholdPruning(final_threshold=0.05, schedule=schedule, ignored_layers=["net.fc"])
    _trainer(tmp_path, 2, [pruning], "default", limit_train_batches=3).fit(DigitsSNN(), _loader())
    assert type(pruning.pruner.schedule).__name__ == "SLATSSchedule"
    assert pruning.pruner.schedule.total_steps == 6 and pruning.pruner.step_count == 6
    assert pruning.pruner.threshold == pytest.approx(0.05)


def test_squash_on_fit_end_leaves_a_plain_model(tmp_path):
    pruning = SoftThresholdPruning(final_threshold=0.05, schedule="constant", compensate=False,
                                   ignored_layers=["net.fc"], squash_on_fit_end=True)
    model = DigitsSNN()
    _trainer(tmp_path, 1, [pruning], "squash").fit(model, _loader())
    plain = DigitsSNN()
    plain.load_state_dict(model.state_dict(), strict=True)
    assert sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight")) > 0


def test_callback_bad_input():
    with pytest.raises(ValueError, match="optimizer"):
        SoftThresholdPruning(final_threshold=0.1, optimizer=object())
    with pytest.raises(ValueError, match="l1_coefficient"):
        SoftThresholdPruning(schedule="lr")
    with pytest.raises(ValueError, match="l1_coefficient"):
        SoftThresholdPruning(schedule="LR")
