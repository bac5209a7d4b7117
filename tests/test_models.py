import pytest
import torch

import models


def test_registry_lists_models_and_rejects_unknown_names():
    expected = {"mobilenet_v1", "resnet50", "sew_resnet18", "sew_resnet34", "sew_resnet50"}
    assert expected <= set(models.list_models())
    assert models.list_models("sew_*") == ["sew_resnet18", "sew_resnet34", "sew_resnet50"]
    with pytest.raises(ValueError, match=r"unknown model 'sew_resnet19'.*sew_resnet18.*valid names"):
        models.create_model("sew_resnet19")


@pytest.mark.parametrize("name, params", [("sew_resnet18", 11_689_512), ("resnet50", 25_557_032),
                                          ("resnet18", 11_689_512),
                                          ("mobilenet_v1", 4_231_976), ("sew_resnet34", 21_797_672),
                                          ("sew_resnet50", 25_557_032)])
def test_imagenet_parameter_counts(name, params):
    model = models.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


def test_sew_resnet_accepts_both_input_layouts_and_averages_over_time():
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", T=3, stem="cifar", in_channels=1, num_classes=5,
                                width_multiplier=0.25).eval()
    x = torch.rand(2, 1, 8, 8)
    from spikingjelly.activation_based import functional

    with torch.no_grad():
        direct = model(x)
        functional.reset_net(model)
        repeated = model(x.unsqueeze(0).repeat(3, 1, 1, 1, 1))
        functional.reset_net(model)
        per_step = super(type(model), model).forward(x.unsqueeze(0).repeat(3, 1, 1, 1, 1))
        functional.reset_net(model)
    assert direct.shape == (2, 5)
    torch.testing.assert_close(direct, repeated)
    torch.testing.assert_close(direct, per_step.mean(0))


def test_sew_resnet_bad_input():
    model = models.create_model("sew_resnet18", T=4, stem="cifar", in_channels=1, width_multiplier=0.25)
    with pytest.raises(ValueError, match="T=2.*T=4"):
        model(torch.rand(2, 3, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(8, 8))
    with pytest.raises(ValueError, match="neuron_type"):
        models.create_model("sew_resnet18", neuron_type="izhikevich")
    with pytest.raises(ValueError, match="cnf"):
        models.create_model("sew_resnet18", cnf="OR")
    with pytest.raises(ValueError, match="stem"):
        models.create_model("sew_resnet18", stem="mnist")


@pytest.mark.parametrize("name, kwargs, shape", [
    ("sew_resnet18", dict(T=2, stem="cifar", num_classes=4, width_multiplier=0.125), (2, 3, 16, 16)),
    ("sew_resnet34", dict(T=2, stem="cifar", num_classes=4, width_multiplier=0.125, cnf="AND"),
     (2, 3, 16, 16)),
    ("sew_resnet50", dict(T=2, stem="cifar", num_classes=4, width_multiplier=0.125, cnf="IAND",
                          neuron_type="plif", surrogate_function="sigmoid"), (2, 3, 16, 16)),
    ("sew_resnet18", dict(T=2, num_classes=4, width_multiplier=0.125, neuron_type="lif", v_reset=None),
     (1, 3, 64, 64)),
    ("resnet50", dict(num_classes=4), (2, 3, 32, 32)),
    ("mobilenet_v1", dict(num_classes=4, width_multiplier=0.25), (2, 3, 32, 32)),
])
def test_every_model_runs_forward_and_backward(name, kwargs, shape):
    from spikingjelly.activation_based import functional

    model = models.create_model(name, **kwargs)
    out = model(torch.rand(shape) * 3)
    assert out.shape == (shape[0], 4) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    functional.reset_net(model)


def test_sew_resnet_neuron_options_reach_every_neuron():
    from spikingjelly.activation_based import neuron, surrogate

    model = models.create_model("sew_resnet18", neuron_type="lif", tau=3.0, v_threshold=0.5, v_reset=None,
                                detach_reset=False, surrogate_function="sigmoid", surrogate_alpha=5.0,
                                width_multiplier=0.125)
    nodes = [m for m in model.modules() if isinstance(m, neuron.BaseNode)]
    assert len(nodes) == 20
    for node in nodes:
        assert type(node) is neuron.LIFNode and node.tau == 3.0 and node.v_threshold == 0.5
        assert node.v_reset is None and node.detach_reset is False
        assert isinstance(node.surrogate_function, surrogate.Sigmoid) and node.surrogate_function.alpha == 5.0


def test_resnet_defaults_are_torchvisions_model():
    import torchvision

    torch.manual_seed(0)
    ours = models.create_model("resnet18")
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(weights=None)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[key]), key


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_narrow_resnet18_is_the_ann_twin_of_sew_resnet18(stem):
    """Same options, same weights: every conv/BN/fc tensor of the SEW model has its torchvision twin."""
    kw = dict(stem=stem, in_channels=1, num_classes=10, width_multiplier=0.25)
    ann = models.create_model("resnet18", **kw)
    snn = models.create_model("sew_resnet18", T=2, **kw)
    shapes = {k: v.shape for k, v in ann.state_dict().items()}
    assert shapes == {k: v.shape for k, v in snn.state_dict().items()}
    assert ann(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"stem must be one of \('imagenet', 'cifar'\)"):
        models.create_model("resnet18", stem="tiny")


# (model, options) -> (parameters, state_dict entries, first conv, its weight's shape): the stem and width
# options' architectures, pinned (values from the code before the stem/width logic was made one)
STEM_WIDTH_CASES = [
    ("resnet18", dict(stem="cifar", width_multiplier=0.25, in_channels=1), 701_178, 122, "conv1",
     (16, 1, 3, 3)),
    ("resnet18", dict(stem="imagenet", width_multiplier=0.3), 1_014_682, 122, "conv1", (19, 3, 7, 7)),
    ("resnet50", dict(stem="cifar", width_multiplier=0.25), 1_484_186, 320, "conv1", (16, 3, 3, 3)),
    ("sew_resnet18", dict(stem="cifar", width_multiplier=0.25, in_channels=1), 701_178, 122, "conv1",
     (16, 1, 3, 3)),
    ("sew_resnet18", dict(stem="imagenet", width_multiplier=0.3), 1_014_682, 122, "conv1", (19, 3, 7, 7)),
    ("sew_resnet18", dict(stem="cifar"), 11_173_962, 122, "conv1", (64, 3, 3, 3)),
    ("sew_resnet50", dict(stem="cifar", width_multiplier=0.25), 1_484_186, 320, "conv1", (16, 3, 3, 3)),
    ("spiking_resnet18", dict(stem="cifar", width_multiplier=0.25, in_channels=1), 701_178, 122, "conv1",
     (16, 1, 3, 3)),
    ("spiking_resnext50_32x4d", dict(stem="cifar", width_multiplier=0.25), 1_454_010, 320, "conv1",
     (16, 3, 3, 3)),
    ("ms_resnet18", dict(stem="cifar", width_multiplier=0.25, in_channels=1), 701_466, 128, "stem.0",
     (16, 1, 3, 3)),
    ("ms_resnet18", dict(stem="imagenet", width_multiplier=0.3), 1_015_081, 128, "stem.0", (19, 3, 7, 7)),
    ("spiking_vgg11_bn", dict(width_multiplier=0.3, pool_size=1, classifier_width=64), 850_971, 62,
     "features.0", (19, 3, 3, 3)),
    ("mobilenet_v1", dict(width_multiplier=0.3), 304_084, 164, "features.0.0", (9, 3, 3, 3)),
]


@pytest.mark.parametrize("name, kwargs, params, entries, first_conv, shape", STEM_WIDTH_CASES)
def test_stem_and_width_options_build_the_pinned_architectures(name, kwargs, params, entries, first_conv,
                                                                shape):
    model = models.create_model(name, num_classes=10, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == entries
    assert tuple(model.get_submodule(first_conv).weight.shape) == shape
    if hasattr(model, "maxpool"):  # the CIFAR stem has no max-pool, the ImageNet stem keeps the library's
        assert isinstance(model.maxpool, torch.nn.Identity) == (kwargs["stem"] == "cifar")


@pytest.mark.parametrize("name", ["mobilenet_v1", "resnet18", "sew_resnet18", "ms_resnet18", "spiking_vgg11"])
@pytest.mark.parametrize("bad", [0, 5, True, "1"])
def test_every_width_multiplier_is_checked_the_same_way(name, bad):
    with pytest.raises(ValueError, match=r"width_multiplier must be a number in \(0, 4\], got"):
        models.create_model(name, width_multiplier=bad)
