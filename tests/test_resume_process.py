"""Resume in a fresh process: N steps, save, new process loads and runs N more == 2N steps in one go."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import HANG

ROOT = Path(__file__).parents[1]
WORKER = Path(__file__).with_name("resume_worker.py")


def _run(*args):
    subprocess.run([sys.executable, str(WORKER), *map(str, args)], check=True, cwd=ROOT, timeout=HANG,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    n = 6
    _run(2 * n, 2 * n, tmp_path / "straight.pth")
    _run(n, 2 * n, tmp_path / "half.pth")
    _run(n, 2 * n, tmp_path / "resumed.pth", tmp_path / "half.pth")
    straight = torch.load(tmp_path / "straight.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pth", weights_only=True)
    assert straight["pruner"] == resumed["pruner"]
    assert straight["pruner"]["step"] == 2 * n and straight["pruner"]["threshold"] > 0
    assert straight["model"].keys() == resumed["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
