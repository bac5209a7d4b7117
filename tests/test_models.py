import pytest
import torch

import models


def test_registry_lists_models_and_rejects_unknown_names():
    assert {"resnet50", "sew_resnet18", "sew_resnet34", "sew_resnet50"} <= set(models.list_models())
    assert models.list_models("sew_*") == ["sew_resnet18", "sew_resnet34", "sew_resnet50"]
    with pytest.raises(ValueError, match=r"unknown model 'sew_resnet19'.*sew_resnet18.*valid names"):
        models.create_model("sew_resnet19")


@pytest.mark.parametrize("name, params", [("sew_resnet18", 11_689_512), ("resnet50", 25_557_032)])
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
