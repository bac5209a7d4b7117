"""The SpikingJelly model-zoo wrappers (models/spikformer.py, ...), the registry's metadata and how train.py
uses it: tiny configs, output shapes, state_dict keys against SpikingJelly's own classes, clear errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from spikingjelly.activation_based.model import ms_resnet as sj_ms_resnet
from spikingjelly.activation_based.model import qkformer as sj_qkformer
from spikingjelly.activation_based.model import spike_driven_transformer as sj_sdt
from spikingjelly.activation_based.model import spikformer as sj_spikformer
from spikingjelly.activation_based.model import spiking_resnet as sj_spiking_resnet
from spikingjelly.activation_based.model import spiking_vgg as sj_spiking_vgg

import models
from experiments import train
from tests.conftest import HANG

ROOT = Path(__file__).parents[1]
LEGACY_DIR = Path(os.environ.get("SNN_LATS_SJ_LEGACY", Path(sys.prefix) / "sj-legacy"))
# name -> tiny kwargs (28x28 one-channel input, 10 classes, T=2)
TINY = {
    "spikformer": dict(T=2, in_channels=1, image_size=28, num_classes=10, patch_size=4, embed_dims=32,
                       num_heads=2,
                       mlp_ratio=2, depths=1),
    "spikformer_tiny": dict(T=2),
    "spike_driven_transformer": dict(T=2, in_channels=1, num_classes=10, embed_dims=32, num_heads=2, depths=1,
                                     mlp_ratio=2, pooling_stat="0011"),
    "spike_driven_transformer_tiny": dict(T=2),
    "qkformer": dict(T=2, in_channels=1, num_classes=10, embed_dims=32, num_heads=[1, 1, 2], depths=[1, 1, 1],
                     mlp_ratio=2),
    "qkformer_tiny": dict(T=2),
    "ms_resnet18": dict(T=2, in_channels=1, num_classes=10, stem="cifar", width_multiplier=0.125),
    "spiking_resnet18": dict(T=2, in_channels=1, num_classes=10, stem="cifar", width_multiplier=0.125,
                             neuron_type="lif"),
    "spiking_resnext50_32x4d": dict(T=2, in_channels=1, num_classes=10, stem="imagenet",
                                    width_multiplier=0.25),
    "spiking_vgg11_bn": dict(T=2, in_channels=1, num_classes=10, width_multiplier=0.125, ceil_mode=True,
                             pool_size=1, classifier_width=32),
}


def _keys_and_shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_config_gives_time_averaged_logits_for_both_layouts(name):
    torch.manual_seed(0)
    model = models.create_model(name, **TINY[name]).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        direct = model(x)
        functional.reset_net(model)
        repeated = model(x.unsqueeze(0).repeat(2, 1, 1, 1, 1))
        functional.reset_net(model)
    assert direct.shape == (3, 10)
    torch.testing.assert_close(direct, repeated)
    with pytest.raises(ValueError, match="T=3.*T=2"):
        model(torch.rand(3, 3, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(28, 28))
    info = models.model_info(name)
    assert info.snn and "T" in info.options
    assert info.classifier in dict(model.named_modules())  # the default --ignored-layers exists


def test_spikformer_is_spikingjellys_spikformer():
    kw = TINY["spikformer"]
    torch.manual_seed(0)
    ours = models.create_model("spikformer", **kw).eval()
    torch.manual_seed(0)
    theirs = sj_spikformer.Spikformer(T=2, in_channels=1, img_size_h=28, img_size_w=28, patch_size=4,
                                      num_classes=10,
                                      embed_dims=32, num_heads=2, mlp_ratio=2.0, depths=1).eval()
    assert isinstance(ours, sj_spikformer.Spikformer)
    assert _keys_and_shapes(ours) == _keys_and_shapes(theirs)
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x).mean(0))  # SpikingJelly's [T, B, classes], averaged
    with pytest.raises(ValueError, match=r"\(32, 32\).*image_size=\(28, 28\)"):
        ours(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="3 channels.*in_channels=1"):
        ours(torch.rand(2, 3, 28, 28))


def test_spikformer_cifar10_preset_matches_spikingjellys():
    ours = models.create_model("spikformer_cifar10")
    theirs = sj_spikformer.spikformer_cifar10()
    assert _keys_and_shapes(ours) == _keys_and_shapes(theirs)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 9_310_906
    with pytest.raises(ValueError, match=r"spikformer_cifar10 fixes \['depths'\]"):
        models.create_model("spikformer_cifar10", depths=2)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(patch_size=8), r"patch_size must be one of \(4, 16\)"),
    (dict(embed_dims=36, num_heads=4), r"embed_dims must be a multiple of 8"),
    (dict(embed_dims=64, num_heads=3), r"embed_dims \(64\) must be divisible by num_heads \(3\)"),
    (dict(T=0), r"T must be an int > 0, got 0"),
    (dict(depths=0), r"depths must be an int >= 1"),
    (dict(image_size=(28,)), r"image_size must be an int >= 1 or a pair"),
    (dict(mlp_ratio="4"), r"mlp_ratio must be a number"),
])
def test_spikformer_bad_arguments_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        models.create_model("spikformer", **kwargs)


def test_spike_driven_transformer_and_qkformer_are_spikingjellys():
    kw = TINY["spike_driven_transformer"]
    ours = models.create_model("spike_driven_transformer", **kw)
    theirs = sj_sdt.SpikeDrivenTransformer(T=2, in_channels=1, num_classes=10, embed_dims=32, num_heads=2,
                                           depths=1,
                                           mlp_ratio=2.0, pooling_stat="0011")
    assert isinstance(ours, sj_sdt.SpikeDrivenTransformer)
    assert _keys_and_shapes(ours) == _keys_and_shapes(theirs)
    ours = models.create_model("qkformer", **TINY["qkformer"])
    theirs = sj_qkformer.QKFormer(T=2, in_channels=1, num_classes=10, embed_dims=32, num_heads=(1, 1, 2),
                                  depths=(1, 1, 1), mlp_ratio=2.0)
    assert isinstance(ours, sj_qkformer.QKFormer) and _keys_and_shapes(ours) == _keys_and_shapes(theirs)
    with pytest.raises(ValueError, match="pooling_stat must be a string of four 0/1"):
        models.create_model("spike_driven_transformer", pooling_stat="011")
    with pytest.raises(ValueError,
                       match=r"num_heads \(1, 3, 2\): a stage of 16 channels cannot split into 3"):
        models.create_model("qkformer", embed_dims=32, num_heads=(1, 3, 2))
    with pytest.raises(ValueError, match="depths must be three ints"):
        models.create_model("qkformer", depths=(1, 2))
    with pytest.raises(ValueError, match="qka_type must be one of"):
        models.create_model("qkformer", qka_type="spatial")


def test_ms_resnet_is_spikingjellys():
    ours = models.create_model("ms_resnet18", **TINY["ms_resnet18"])
    theirs = sj_ms_resnet.MSResNet(T=2, in_channels=1, num_classes=10, base_channels=8,
                                   stage_channels=(8, 16, 32, 64), stem_kernel_size=3, stem_stride=1)
    assert isinstance(ours, sj_ms_resnet.MSResNet) and _keys_and_shapes(ours) == _keys_and_shapes(theirs)
    for name, builder in (("ms_resnet18", sj_ms_resnet.ms_resnet18),
                          ("ms_resnet34", sj_ms_resnet.ms_resnet34)):
        assert _keys_and_shapes(models.create_model(name)) == _keys_and_shapes(builder())


@pytest.mark.parametrize("name, params", [("spiking_resnet18", 11_689_512), ("spiking_resnet34", 21_797_672),
                                          ("spiking_resnet50", 25_557_032),
                                          ("spiking_resnext50_32x4d", 25_028_904)])
def test_spiking_resnets_at_imagenet_size_are_spikingjellys(name, params):
    ours = models.create_model(name)
    theirs = getattr(sj_spiking_resnet, name)(spiking_neuron=neuron.IFNode)
    assert _keys_and_shapes(ours) == _keys_and_shapes(theirs)
    assert sum(p.numel() for p in ours.parameters()) == params


def test_narrow_spiking_resnet_and_vgg_keep_spikingjellys_keys():
    ours = models.create_model("spiking_resnet18", **TINY["spiking_resnet18"])
    theirs = sj_spiking_resnet.spiking_resnet18(spiking_neuron=neuron.IFNode)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert isinstance(ours.sn1, neuron.LIFNode) and ours.layer4[1].conv2.out_channels == 64
    ours = models.create_model("spiking_vgg11_bn", **TINY["spiking_vgg11_bn"])
    cfg = [v if v == "M" else v // 8 for v in sj_spiking_vgg.cfgs["A"]]
    theirs = sj_spiking_vgg.SpikingVGG(cfg, batch_norm=True, num_classes=10, spiking_neuron=neuron.IFNode)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert ours.features[0].in_channels == 1 and ours.classifier[6].in_features == 32
    with pytest.raises(ValueError, match="no channel per group"):
        models.create_model("spiking_resnext50_32x4d", width_multiplier=0.125)
    with pytest.raises(ValueError, match="neuron_type must be one of"):
        models.create_model("spiking_vgg11", neuron_type="izhikevich")
    with pytest.raises(ValueError, match="ceil_mode must be a bool"):
        models.create_model("spiking_vgg11", ceil_mode="yes")


def test_model_info_declares_what_train_needs():
    info = models.model_info("spikformer")
    assert (info.snn, info.classifier, info.options) == (True, "head", ("T", "image_size"))
    assert {"embed_dims", "depths", "num_heads", "patch_size", "mlp_ratio"} <= set(info.arch_kwargs)
    assert info.family == "spikingjelly.activation_based.model.spikformer"
    options = models.model_info("sew_resnet18").options
    assert options == ("T", "neuron_type", "cnf", "stem", "width_multiplier")
    # the names model_info lists are the builder's keywords (the README's create_model call uses them)
    net = models.create_model("sew_resnet18", neuron_type="lif", T=2, num_classes=10, width_multiplier=0.125)
    assert "LIFNode" in {type(m).__name__ for m in net.modules()}
    with pytest.warns(FutureWarning, match="img_size= is spelled image_size= now"):  # an old checkpoint's
        old = models.create_model("spikformer_tiny", img_size=28)
    assert old.image_size == (28, 28)
    assert models.model_info("spiking_vgg16_bn").classifier == "classifier.6"
    assert not models.model_info("resnet18").snn and not models.model_info("mobilenet_v1").snn
    with pytest.raises(ValueError, match="unknown model 'spikformr'.*spikformer"):
        models.model_info("spikformr")
    with pytest.raises(ValueError, match="unknown train options"):
        models.ModelInfo("x", snn=True, options=("T", "depth"))
    # every registered model builds with its own metadata's option names (nothing declared that it rejects)
    for name in models.list_models():
        info = models.model_info(name)
        assert set(info.accepted_kwargs) >= {"num_classes", "in_channels"}


def test_registry_has_no_import_cycle():
    result = subprocess.run([sys.executable, "-c",
                             "import models.spikformer, models._registry; import models; "
                             "print(len(models.list_models()))"], cwd=ROOT, capture_output=True, text=True,
                            timeout=HANG)
    assert result.returncode == 0, result.stderr


BASE = ["--data", "digits", "--T", "2", "--method", "s-lats", "--final-threshold", "0.01", "--device", "cpu"]


def test_train_model_kwargs_reach_the_builder_and_the_classifier_is_ignored():
    args = train.parse_args([*BASE, "--model", "spikformer", "--model-kwargs",
                             '{"patch_size": 4, "embed_dims": 16, "num_heads": 2, "depths": 1}'])
    assert args.model_kwargs == {"patch_size": 4, "embed_dims": 16, "num_heads": 2, "depths": 1}
    kwargs = train.model_kwargs(args, 10, 1)
    assert kwargs == dict(num_classes=10, in_channels=1, T=2, image_size=[8, 8], patch_size=4, embed_dims=16,
                          num_heads=2, depths=1)
    model = models.create_model(args.model, **kwargs)
    assert model.embed_dims == 16 and len(model.blocks) == 1
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert train.ignored_layers(args) == ["head"]
    assert train.ignored_layers(train.parse_args([*BASE, "--model", "spiking_vgg11"])) == ["classifier.6"]
    assert train.ignored_layers(train.parse_args([*BASE, "--model", "sew_resnet18"])) == ["fc"]
    assert train.ignored_layers(train.parse_args(["--data", "digits", "--model", "resnet18", "--method",
                                                  "dense"])) == []
    assert train.ignored_layers(train.parse_args([*BASE, "--model", "spikformer", "--ignored-layers"])) == []
    vgg = train.parse_args([*BASE, "--model", "spiking_vgg11_bn", "--neuron", "lif", "--width-multiplier",
                            "0.125",
                            "--model-kwargs", '{"ceil_mode": true, "pool_size": 1, "classifier_width": 16}'])
    kwargs = train.model_kwargs(vgg, 10, 1)
    assert kwargs["neuron_type"] == "lif" and kwargs["ceil_mode"] is True and "cnf" not in kwargs


def test_train_model_kwargs_from_a_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: qkformer\nT: 2\nmodel_kwargs: {embed_dims: 16, num_heads: [1, 1, 2]}\n")
    args = train.parse_args(["-c", str(config), "--method", "dense"])
    kwargs = train.model_kwargs(args, 10, 1)
    assert kwargs == dict(num_classes=10, in_channels=1, T=2, embed_dims=16, num_heads=[1, 1, 2])
    assert models.create_model(args.model, **kwargs).stage3[0] is not None


@pytest.mark.parametrize("extra, pattern", [
    (["--model", "spikformer", "--model-kwargs", "{depths: 2}"], r"--model-kwargs must be a JSON object"),
    (["--model", "spikformer", "--model-kwargs", "[2]"],
     r"--model-kwargs must be a JSON object \(a mapping\)"),
    (["--model", "spikformer", "--model-kwargs", '{"depth": 2}'],
     r"--model-kwargs 'depth' is not an architecture option of spikformer; it takes \['patch_size'"),
    (["--model", "spikformer", "--model-kwargs", '{"T": 2}'], r"--model-kwargs 'T': set by --T"),
    (["--model", "spikformer", "--model-kwargs", '{"image_size": 28}'],
     r"--model-kwargs 'image_size': set by the data"),
    (["--model", "spikformer_tiny", "--model-kwargs", '{"depths": 2}'],
     r"not an architecture option of spikformer_tiny; it takes \[\]"),
    (["--model", "spikformer", "--neuron", "lif"], r"--neuron does not apply to --model spikformer"),
    (["--model", "resnet18", "--T", "2"], r"--T does not apply to --model resnet18"),
    (["--model", "ms_resnet18", "--cnf", "AND"], r"--cnf does not apply to --model ms_resnet18"),
])
def test_train_rejects_options_the_model_does_not_take(extra, pattern, capsys):
    import re

    argv = [a for a in BASE if a not in ("--T", "2")] if "--T" in extra else BASE
    with pytest.raises(SystemExit) as exc:
        train.parse_args([*argv, *extra])
    assert exc.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


def test_train_spikformer_one_epoch_prunes_its_conv1d_layers(tmp_path):
    """The sweep's model on digits, one short epoch of S-LATS: the attention's and MLP's Conv1d are pruned."""
    import snn_lats

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "experiments.train", *BASE, "--model", "spikformer",
                             "--model-kwargs", '{"patch_size": 4, "embed_dims": 16, "num_heads": 2, '
                             '"depths": 1}',
                             "--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch", "4",
                             "--output-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=HANG)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    checkpoint = torch.load(out / "checkpoint_last.pth", weights_only=True)
    model = models.create_model("spikformer", **checkpoint["model_kwargs"])
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.01, total_steps=1, ignored_layers=["head"])
    names = set(pruner.sparsity_report().layers)
    assert {"blocks.0.attn.qkv_conv_bn.0", "blocks.0.attn.proj_conv_bn.0", "blocks.0.mlp.fc1.0",
            "patch_embed.stages.0.conv_bn.block.0"} <= names and "head" not in names
    assert checkpoint["args"]["model_kwargs"]["embed_dims"] == 16
    assert checkpoint["args"]["ignored_layers"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] > 0


def test_zoo_wrappers_under_spikingjelly_0_0_0_0_14():
    """The families 0.0.0.0.14 has (spiking_resnet, spiking_vgg) build and run there; the transformers and
    MS-ResNet fail with an error naming the missing module."""
    if not (LEGACY_DIR / "spikingjelly").is_dir():
        pytest.skip(f"spikingjelly 0.0.0.0.14 not installed at {LEGACY_DIR}")

    script = """
import inspect, warnings
warnings.filterwarnings("ignore")
import torch
from spikingjelly.activation_based import functional, neuron
assert "backend" in inspect.signature(neuron.LIFNode.__init__).parameters, "not spikingjelly 0.0.0.0.14"
import models
for name, kw in [("spiking_resnet18", dict(stem="cifar", width_multiplier=0.125)),
                 ("spiking_vgg11_bn",
                  dict(width_multiplier=0.125, ceil_mode=True, pool_size=1, classifier_width=16))]:
    m = models.create_model(name, T=2, in_channels=1, num_classes=10, **kw)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10), name
    functional.reset_net(m)
for name in ("spikformer_tiny", "spike_driven_transformer_tiny", "qkformer_tiny", "ms_resnet18"):
    try:
        models.create_model(name)
    except ImportError as e:
        assert "has no spikingjelly.activation_based.model." in str(e), e
    else:
        raise AssertionError(name + " built under 0.0.0.0.14")
print("legacy zoo OK")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LEGACY_DIR), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=HANG)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "legacy zoo OK" in result.stdout
