"""Run by tests/test_structured_zoo.py with SpikingJelly 0.0.0.0.14 first on PYTHONPATH: OCSPruner on its own
SpikingResNet and SEW ResNet (BasicBlock, one block per stage) with IF and LIF nodes. An eval-mode node there
computes spikes without autograd, which used to cut torch-pruning's trace."""
import inspect
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation in 0.0.0.0.14

import torch  # noqa: E402
from spikingjelly.activation_based import functional, neuron  # noqa: E402
from spikingjelly.activation_based.model import sew_resnet, spiking_resnet  # noqa: E402

from snn_lats.structured import OCSPruner, apply_structure, count_macs, structure_spec  # noqa: E402

# 0.0.0.0.14 by feature: neurons take a `backend` argument and functional has set_backend.
assert "backend" in inspect.signature(neuron.LIFNode.__init__).parameters, "not spikingjelly 0.0.0.0.14"
assert hasattr(functional, "set_backend")

torch.set_num_threads(1)  # tiny inputs: one thread is much faster on a shared CPU
CASES = {
    "SpikingResNet/IF": lambda: spiking_resnet.SpikingResNet(
        spiking_resnet.BasicBlock, [1, 1, 1, 1], num_classes=10, spiking_neuron=neuron.IFNode),
    "SEWResNet/LIF": lambda: sew_resnet.SEWResNet(
        sew_resnet.BasicBlock, [1, 1, 1, 1], num_classes=10, cnf="ADD", spiking_neuron=neuron.LIFNode),
}
x = torch.rand(2, 1, 3, 16, 16)  # [T, B, C, H, W]
for name, build in CASES.items():
    torch.manual_seed(0)
    net = build()
    functional.set_step_mode(net, "m")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    pruner = OCSPruner(net, x, 0.4)
    assert not pruner.skipped_groups, (name, pruner.skipped_groups)
    # the trace ran neurons in train mode but left BN statistics and every training flag alone
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()), name
    assert all(m.training for m in net.modules()), name
    spec = pruner.prune()
    measured = count_macs(net, x)
    assert measured == pruner.pruned_flops, name
    assert abs(pruner.achieved_flops_reduction - 0.4) < 0.01, (name, pruner.achieved_flops_reduction)
    torch.manual_seed(0)
    rebuilt = apply_structure(build(), spec)
    functional.set_step_mode(rebuilt, "m")
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    net.eval(), rebuilt.eval()
    with torch.no_grad():
        out = net(x)
        functional.reset_net(net)
        assert out.shape == (2, 1, 10) and torch.equal(out, rebuilt(x)), name
    assert structure_spec(rebuilt) == spec
    print(f"{name}: {pruner.dense_flops} -> {measured} MACs ({pruner.achieved_flops_reduction:.4f})")
print("legacy ocs OK")
