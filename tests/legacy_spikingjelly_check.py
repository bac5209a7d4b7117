"""Run by tests/test_spikingjelly.py with SpikingJelly 0.0.0.0.14 first on PYTHONPATH.

Checks by feature, not by version string, that the old API is the one loaded, then runs the pruning flow.
"""
import inspect
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation in 0.0.0.0.14

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: E402
from spikingjelly.activation_based.model import sew_resnet  # noqa: E402

import models  # noqa: E402
import snn_lats  # noqa: E402

# 0.0.0.0.14 features: a `backend` argument, functional.set_backend, and no reset cache.
assert "backend" in inspect.signature(neuron.LIFNode.__init__).parameters, "not spikingjelly 0.0.0.0.14"
assert hasattr(functional, "set_backend") and not hasattr(functional, "invalidate_reset_cache")

torch.manual_seed(0)
model = models.create_model("sew_resnet18", T=4, neuron_type="lif", stem="cifar", in_channels=1,
                            num_classes=10, width_multiplier=0.25)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.05, total_steps=5, ignored_layers=["fc"],
                                      optimizer=optimizer)
x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
for _ in range(5):
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
    functional.reset_net(model)
    pruner.step()
assert pruner.sparsity_report().sparsity > 0.2

# A neuron added after a first reset_net is reset too: 0.0.0.0.14 walks the modules on every call.
model.extra_sn = neuron.LIFNode(step_mode="m")
model.extra_sn(torch.ones(2, 3))
functional.reset_net(model)
assert not isinstance(model.extra_sn.v, torch.Tensor) or model.extra_sn.v.abs().sum() == 0
del model.extra_sn

# Squash, then load strictly into SpikingJelly 0.0.0.0.14's own SEW ResNet-18.
net = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan(),
                              detach_reset=True)
functional.set_step_mode(net, "m")
pruner = snn_lats.SoftThresholdPruner(net, final_threshold=0.02, schedule="constant", compensate=False,
                                      ignored_layers=["fc"])
inp = torch.rand(4, 2, 3, 32, 32)
net.eval()
with torch.no_grad():
    before = net(inp)
functional.reset_net(net)
pruner.squash()
with torch.no_grad():
    after = net(inp)
assert torch.allclose(before, after, atol=1e-6, rtol=0)
fresh = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode)
fresh.load_state_dict(net.state_dict(), strict=True)
# Spike-level metrics on 0.0.0.0.14: firing rates equal its own OutputMonitor, SOPs are counted.
from spikingjelly.activation_based import monitor  # noqa: E402

from snn_lats.metrics import measure  # noqa: E402

fresh.eval()
functional.set_step_mode(fresh, "m")
mon = monitor.OutputMonitor(fresh, neuron.BaseNode,
                            function_on_output=lambda s: s.detach().double().mean().item())
with torch.no_grad():
    fresh(inp * 4)
functional.reset_net(fresh)
reference = {name: mon[name][0] for name in mon.monitored_layers}
mon.remove_hooks()
report = measure(fresh, [inp * 4])
assert len(reference) == 20 and any(v > 0 for v in reference.values())
for name, rate in reference.items():
    assert abs(report.layers[name]["firing_rate"] - rate) < 1e-12, name
assert report.total["sops"] > 0 and report.layers["layer1.1.conv1"]["input_kind"] == "integer"
# Fused neurons on 0.0.0.0.14: exact against its LIFNode, reset by reset_net, swapped into a SEW ResNet.
from snn_lats.snn import MultiStepLIFNode, use_fused_neurons  # noqa: E402

x_seq = torch.randn(6, 4, 33) * 1.5
old = neuron.LIFNode(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", backend="torch")
new = MultiStepLIFNode(surrogate_function=surrogate.ATan(), detach_reset=True)
assert torch.equal(old(x_seq), new(x_seq)) and torch.allclose(old.v, new.v, atol=1e-6, rtol=0)
functional.reset_net(torch.nn.Sequential(new))
assert not isinstance(new.v, torch.Tensor)
probe = torch.rand(3, 1, 8, 8) * 3
# LIF and PLIF (its ParametricLIFNode is swapped too, keeping w): identical outputs, and w's gradient agrees.
for neuron_type in ("lif", "plif"):
    kwargs = dict(T=2, neuron_type=neuron_type, stem="cifar", in_channels=1, num_classes=10,
                  width_multiplier=0.125)
    small, twin = (models.create_model("sew_resnet18", **kwargs) for _ in range(2))
    twin.load_state_dict(small.state_dict())
    assert len(use_fused_neurons(twin).replaced) == 20
    out, out_twin = small(probe), twin(probe)
    assert torch.equal(out, out_twin), neuron_type
    if neuron_type == "plif":
        out.square().sum().backward()
        out_twin.square().sum().backward()
        torch.testing.assert_close(twin.layer1[0].sn1.w.grad, small.layer1[0].sn1.w.grad, rtol=1e-5,
                                   atol=1e-7)
print("legacy spikingjelly OK")
