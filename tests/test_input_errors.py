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


def test_export_and_load_dense_name_a_model_that_is_not_one():
    import snn_lats

    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got 'x'"):
        snn_lats.export_dense("x")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got 'x'"):
        snn_lats.load_dense("x", {})
    with pytest.raises(TypeError, match="clone must be True or False"):
        snn_lats.export_dense(nn.Linear(2, 2), clone="no")


class ChannelShuffle(nn.Module):
    """conv1's channels are interleaved before conv2 (ShuffleNet): removing any of them breaks the view or
    scrambles which channel conv2 reads."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(torch.relu(self.bn2(self.conv2(x))).mean((2, 3)))


def test_ocs_leaves_a_channel_shuffle_whole_and_says_so():
    from snn_lats.structured import OCSPruner

    model = ChannelShuffle()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 8, 8)
    # conv1's group breaks the view; conv2's is the only one left, and a single group cannot be ranked
    # (π = 1): refused at construction, never a "pruned" model with 0 % cut
    with pytest.raises(ValueError, match=r"one prunable channel group \(conv2\).*π = 1.*1 group\(s\) are "
                                         r"left unpruned \(conv1: removing one of its channels breaks the"):
        OCSPruner(model, x, 0.3, monitor_start_epoch=0)
    assert model.conv1.out_channels == model.conv2.out_channels == 8
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
