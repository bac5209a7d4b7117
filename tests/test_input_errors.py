"""Bad input to the registry and the small tools: a clear error naming the argument, nothing written."""
import numpy as np
import pytest
import torch
from torch import nn

import models
from experiments import pick_from_trail
from snn_lats.trail import Trail


@pytest.mark.parametrize("name, kwargs, error, message", [
    (None, {}, TypeError, "model name must be a str, one of"),
    ("sew_resnet18", {"num_classes": 0}, ValueError, "num_classes must be an int >= 1, got 0"),
    ("resnet18", {"num_classes": 2.5}, TypeError, "num_classes must be an int >= 1, got 2.5"),
    ("mobilenet_v1", {"in_channels": 0}, ValueError, "in_channels must be an int >= 1, got 0"),
    ("mobilenet_v1", {"num_classes": True}, TypeError, "num_classes must be an int >= 1, got True"),
])
def test_create_model_names_the_bad_argument(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        models.create_model(name, **kwargs)


def test_create_model_takes_integer_like_class_counts():
    assert models.create_model("resnet18", num_classes=np.int64(3)).fc.out_features == 3


def test_pick_from_trail_with_a_missing_entry_copies_nothing(tmp_path, capsys):
    trail = Trail(tmp_path / "trail")
    trail.add(nn.Linear(2, 2).state_dict(), epoch=1, acc1=90.0, sparsity=0.5)
    (tmp_path / "trail" / "epoch_001.pth").unlink()  # the index outlived its file
    rc = pick_from_trail.main([str(tmp_path / "trail"), "--min-acc", "50", "--copy-to",
                               str(tmp_path / "x.pth")])
    assert rc == 2 and "which does not exist; nothing copied" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_pick_from_trail_copies_the_entry(tmp_path):
    trail = Trail(tmp_path / "trail")
    trail.add(nn.Linear(2, 2).state_dict(), epoch=1, acc1=90.0, sparsity=0.5)
    assert pick_from_trail.main([str(tmp_path / "trail"), "--min-acc", "50", "--copy-to",
                                 str(tmp_path / "x.pth")]) == 0
    assert torch.load(tmp_path / "x.pth", weights_only=True)["epoch"] == 1


def test_benchmark_model_flags_that_override_the_checkpoint_are_said(tmp_path):
    from experiments import benchmark_sparsity

    kwargs = {"num_classes": 10, "in_channels": 1}
    checkpoint = {"model": models.create_model("resnet18", **kwargs).state_dict(), "model_name": "resnet18",
                  "model_kwargs": kwargs}
    with pytest.warns(UserWarning, match="--model resnet50 overrides the checkpoint's model 'resnet18'"):
        with pytest.raises(ValueError, match="does not match the model"):
            benchmark_sparsity.build_model(checkpoint, "resnet50", None)
    with pytest.warns(UserWarning, match=r"--model-kwargs .* override the checkpoint's"):
        with pytest.raises(ValueError):
            benchmark_sparsity.build_model(checkpoint, None, {"num_classes": 5, "in_channels": 1})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checkpoint's own name and kwargs: nothing to say
        assert benchmark_sparsity.build_model(checkpoint, "resnet18", dict(kwargs)).fc.out_features == 10
