"""A new --method is one registry entry: registered here, it trains, logs and resumes through train.py with no
other change."""
import csv

import pytest

import snn_lats
from experiments import methods, train
from tests.test_train import TINY

ARGS = [a for i, a in enumerate(TINY) if a != "--final-threshold" and TINY[i - 1] != "--final-threshold"]


@pytest.fixture
def one_shot_magnitude():
    """Magnitude pruning to 50 % at the first step: a method train.py has never heard of."""
    def build(ctx):
        return methods.RunPruners(ctx.model, {"pruner": snn_lats.MagnitudePruner(
            ctx.model, pruning_ratio=0.5, total_steps=1, ignored_layers=ctx.ignored_layers)})

    method = methods.register(methods.Method("one-shot", build=build))
    yield method
    del methods.METHODS["one-shot"]


def test_a_registered_method_runs_through_the_whole_pipeline(one_shot_magnitude, tmp_path):
    out = tmp_path / "run"
    row = train.main([*ARGS, "--method", "one-shot", "--epochs", "2", "--max-steps-per-epoch", "2",
                      "--output-dir", str(out)])
    assert row["sparsity"] == pytest.approx(0.5, abs=1e-3)  # the one-shot ramp, on every prunable layer
    with open(out / "log.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    resumed = train.main([*ARGS, "--method", "one-shot", "--epochs", "2", "--max-steps-per-epoch", "2",
                          "--output-dir", str(out), "--resume", "auto"])
    assert resumed["sparsity"] == row["sparsity"]


def test_every_method_is_registered_once_with_a_builder():
    assert set(methods.METHODS) == {"dense", "s-lats", "lats", "pgh", "lr", "early", "pai", "gmp", "ltp",
                                    "ocs", "ocs-lats"}
    with pytest.raises(ValueError, match="registered twice"):
        methods.register(methods.Method("gmp", build=lambda ctx: None))
    with pytest.raises(ValueError, match="--method must be one of"):
        methods.get_method("stds")


def test_run_pruners_name_a_state_the_checkpoint_lacks_before_loading_any():
    from tests.conftest import TinyCNN

    model = TinyCNN()
    pruner = snn_lats.SoftThresholdPruner(model, 0.1, "s-lats", 10)
    pruners = methods.RunPruners(model, {"pruner": pruner})
    with pytest.raises(ValueError, match="holds no SoftThresholdPruner state, so it is from another"):
        pruners.load_state_dict({"pruner": None, "ocs": {"version": 1}})
    assert pruner.step_count == 0
