"""Run in a fresh process by tests/test_resume_process.py: build, optionally load a checkpoint, train, save.

    python tests/resume_worker.py STEPS_BEFORE_SAVE TOTAL_STEPS OUT [CHECKPOINT]
"""
import sys

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

import models
import snn_lats


def batch(step):
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.rand(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)


def main(first, total, out, checkpoint=None):
    torch.manual_seed(0 if checkpoint is None else 99)  # a resumed process must not depend on its own init
    model = models.create_model("sew_resnet18", T=2, neuron_type="lif", stem="cifar", in_channels=1,
                                num_classes=10, width_multiplier=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.05, schedule="lr", total_steps=total,
                                          optimizer=optimizer, lr_scheduler=lr_scheduler,
                                          ignored_layers=["fc"])
    start = 0
    if checkpoint is not None:
        ckpt = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        pruner.load_state_dict(ckpt["pruner"])
        start = pruner.step_count
    stop = first if checkpoint is None else total
    for step in range(start, stop):
        x, y = batch(step)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        functional.reset_net(model)
        pruner.step()
        lr_scheduler.step()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(), "pruner": pruner.state_dict()}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
