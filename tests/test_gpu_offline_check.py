"""experiments/gpu_offline_check.py (`make gpu-offline-check`): the GPU machine's offline install rehearsed
in a fresh venv, with no index, on the carried wheels; and its smoke run's assertions on this machine's
packages."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from experiments import gpu_offline_check

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
# where this machine keeps torch wheels (pip's configuration here); override with SNN_LATS_TORCH_LINKS
TORCH_LINKS = [Path(p) for p in
               os.environ.get("SNN_LATS_TORCH_LINKS", "/opt/wheels:/opt/pypi/files").split(":")]


def test_smoke_on_this_environment(capsys):
    gpu_offline_check.smoke()  # raises on a wrong result
    out = capsys.readouterr().out
    assert "fused LIF = SpikingJelly LIF" in out and "S-LATS: sparsity" in out and "channel groups" in out


@pytest.mark.slow  # about a minute: installs torch into a fresh venv from local wheels
def test_rehearsal_in_a_fresh_venv_without_an_index(tmp_path):
    if not any(WHEELS.glob("*.whl")):
        pytest.skip("no .whl/ here: `make gpu-wheels` downloads the carried wheels (needs PyPI)")
    links = [d for d in TORCH_LINKS if any(d.glob("torch-*.whl"))]
    if not links:
        pytest.skip(f"no torch wheel in {', '.join(map(str, TORCH_LINKS))} (set SNN_LATS_TORCH_LINKS)")
    links += [d for d in TORCH_LINKS if d.is_dir() and d not in links]  # torch's own needs
    checks = gpu_offline_check.rehearse(WHEELS, links, tmp_path)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok and c.name != "network"]
    assert not failed, "\n".join(failed)
    assert [c.name.split(" ")[0] for c in checks][-1] == "smoke"  # every check ran
