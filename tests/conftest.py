import os

import pytest
import torch
from hypothesis import settings
from torch import nn

# The suite's tensors are tiny: one intra-op thread per process is several times faster than two on a shared
# or loaded CPU (two threads wait for each other whenever one is descheduled: 20x slower at a load of 8), and
# each pytest-xdist worker then keeps to its core. Subprocesses (torchrun, sweeps' runs, `python -m ...`)
# inherit it through the environment. OMP_NUM_THREADS set by the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Property tests draw the same examples on every run (a verdict never depends on the draw, and CI is
# reproducible); SNN_LATS_PROPERTY_SCALE=N (the files scale their example counts by it) hunts from a random
# seed instead. A test's own settings(...) inherits this profile.
settings.register_profile("snn_lats", derandomize="SNN_LATS_PROPERTY_SCALE" not in os.environ, database=None)
settings.load_profile("snn_lats")

# How long a test waits for a subprocess, or for a file a subprocess writes, before calling it hung: far more
# than any of them takes on a machine oversubscribed several times over (no verdict depends on wall time),
# and less than pytest-timeout's per-test limit (pyproject.toml), so a hang names what hung.
HANG = 1500


# Modules whose module-scoped fixtures are costly (a training run, a built wheel, compiled kernels): under
# pytest-xdist (`make test` runs `-n auto --dist loadgroup`) all their tests go to one worker, so each fixture
# is computed once; every other test goes to whichever worker is free.
ONE_WORKER = ("test_bench_saved_bytes", "test_cli_properties", "test_kernel_emulation", "test_kill_resume",
              "test_properties", "test_structured", "test_train_structured", "test_wheel")


def pytest_collection_modifyitems(items):
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rpartition(".")[2] if module is not None else ""
        if name in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(name))


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny tensors: one intra-op thread (the whole suite's default now, kept for modules that
    must not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


@pytest.fixture
def tiny_cnn():
    return TinyCNN()


def train_steps(model, pruner, optimizer, steps, lr_scheduler=None, seed=1):
    """``steps`` SGD steps of TinyCNN-shaped random data, stepping the pruner after the optimizer."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        pruner.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
