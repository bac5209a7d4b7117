"""The wheel as a user gets it (issue #17.4): built from the repository, installed with --no-deps into a fresh
venv, and used from a directory outside the repository.

Isolation: the sources are copied (as the working tree has them, without .git, .venv, runs/, build/ or
egg-info) into a temporary folder and the wheel is built there, so no stale build/ folder of the repository
leaks into it and the repository is not written to. The venv is made with ``--without-pip``; a ``.pth``
file in its site-packages names the project's installed dependencies (.venv's site-packages, where torch,
spikingjelly and scikit-learn are) and nothing else: as a plain path line, the editable install's hook in
there is not run, so neither the repository's ``snn_lats`` nor ``models``/``experiments`` are importable.
The wheel goes in with ``.venv/bin/pip --python VENV/bin/python install --no-deps --no-index`` (offline;
pip writes the console script with VENV's interpreter). Everything runs with the temporary folder as working
directory and without the caller's PYTHONPATH.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import HANG

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about 2 minutes on 2 shared cores (four fresh interpreters import torch)

NOT_COPIED = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".whl",
              ".gl", ".ruff_cache")


def _run(cmd, cwd, env, timeout=HANG):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _check(result):
    assert result.returncode == 0, f"{result.args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, its bin folder, the wheel, a clean environment, a working directory outside the repo)"""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                                "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["PIP_NO_INPUT"] = "1"
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_COPIED))
    wheels = base / "wheels"
    _check(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "--no-index", "-w", wheels, "."], cwd=source, env=env))
    (wheel,) = wheels.glob("snn_lats-*.whl")

    venv = base / "venv"
    _check(_run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, env=env))
    python = venv / "bin" / "python"
    site = Path(_check(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                            cwd=base, env=env)).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])  # .venv's, in order
    assert not any(Path(d).resolve() == ROOT for d in deps)
    (site / "_snn_lats_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    _check(_run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
                 wheel], cwd=base, env=env))
    work = base / "work"  # outside the repository
    work.mkdir()
    return python, venv / "bin", wheel, env, work


def test_the_wheel_holds_the_package_and_its_tool_and_nothing_of_the_repository(installed):
    _, _, wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "snn_lats" in tops and {"experiments", "models", "tests"}.isdisjoint(tops), sorted(tops)
    for path in ("snn_lats/__init__.py", "snn_lats/cli/__init__.py", "snn_lats/cli/measure.py",
                 "snn_lats/cli/data.py", "snn_lats/metrics/__init__.py", "snn_lats/cli/export.py",
                 "snn_lats/export/__init__.py", "snn_lats/metrics/storage.py", "snn_lats/metrics/energy.py",
                 "snn_lats/metrics/membrane.py", "snn_lats/integrations/neurobench.py"):
        assert path in names, path
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "snn-lats-measure = snn_lats.cli.measure:main" in scripts
    assert "snn-lats-export = snn_lats.cli.export:main" in scripts


def test_the_installed_package_is_the_wheels_and_the_repository_is_out_of_reach(installed):
    python, _, _, env, work = installed
    probe = textwrap.dedent("""
        import importlib.util, snn_lats, torch, spikingjelly
        print(snn_lats.__file__)
        print([m for m in ("models", "experiments", "tests") if importlib.util.find_spec(m) is not None])
    """)
    where, reachable = _check(_run([python, "-c", probe], cwd=work, env=env)).stdout.splitlines()[-2:]
    assert Path(where).is_relative_to(python.parent.parent), where
    assert not Path(where).is_relative_to(ROOT / "snn_lats"), where
    assert reachable == "[]"


SCRIPT = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

import snn_lats
from spikingjelly.activation_based import functional, layer, neuron, surrogate


class Net(torch.nn.Module):  # a tiny SpikingJelly CSNN on 8x8 inputs
    def __init__(self):
        super().__init__()
        self.conv = layer.Conv2d(1, 8, 3, padding=1)
        self.lif = neuron.LIFNode(surrogate_function=surrogate.ATan())
        self.fc = layer.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.lif(self.conv(x)).flatten(1))


torch.manual_seed(0)
model = Net()
loader = DataLoader(TensorDataset(torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))), batch_size=16)
criterion = torch.nn.CrossEntropyLoss()
epochs = 2

{readme_loop}

print("THRESHOLD", float(pruner.threshold))
print("SPARSITY", snn_lats.sparsity_report(model).sparsity)
Net().load_state_dict(model.state_dict(), strict=True)
'''


def readme_training_loop() -> str:
    """The loop's code block of README.md's "Use it in your training loop" section, as it stands (the block
    before it builds the registry's model and the digits, which the wheel does not ship)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it in your training loop", 1)[1].split("\n##")[0]  # to ## or ###
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    code = next(b for b in blocks if "pruner.step()" in b)
    assert "pruner.step()" in code and "snn_lats.sparsity_report(model)" in code, code
    return code


def test_the_readmes_training_loop_runs_from_the_installed_wheel(installed):
    python, _, _, env, work = installed
    (work / "readme_loop.py").write_text(SCRIPT.replace("{readme_loop}", readme_training_loop()))
    out = _check(_run([python, "readme_loop.py"], cwd=work, env=env)).stdout
    values = dict(line.split(" ", 1) for line in out.splitlines()
                  if line.startswith(("THRESHOLD", "SPARSITY")))
    assert float(values["THRESHOLD"]) == pytest.approx(0.08)  # s-lats ends exactly at D
    assert 0 < float(values["SPARSITY"]) < 1


# the CLI tests' own user model (a SpikingJelly CSNN), copied out of the repository as the user's package
USER_MODULE = ROOT / "tests" / "user_models.py"


def _user_package(folder: Path, env: dict) -> dict:
    """``my_nets.csnn`` (tests/user_models.py) in ``folder``, and ``env`` with it on PYTHONPATH."""
    (folder / "my_nets").mkdir(parents=True)
    (folder / "my_nets" / "__init__.py").write_text("")
    shutil.copyfile(USER_MODULE, folder / "my_nets" / "csnn.py")
    return {**env, "PYTHONPATH": str(folder)}


def test_the_console_script_measures_a_users_spikingjelly_model_on_digits(installed):
    python, bin_dir, _, env, work = installed
    env = _user_package(work / "user_code", env)
    save = textwrap.dedent("""
        import torch, snn_lats
        from my_nets.csnn import build_csnn as build
        torch.manual_seed(0)
        model = build(channels=6)
        pruner = snn_lats.SoftThresholdPruner(model, 0.1, "constant", compensate=False,
                                              ignored_layers=["net.5"])
        pruner.squash()
        torch.save({"model": model.state_dict()}, "pruned.pth")
    """)
    _check(_run([python, "-c", save], cwd=work, env=env))
    tool = bin_dir / "snn-lats-measure"
    result = _check(_run([tool, "--model", "my_nets.csnn:build_csnn", "--model-kwargs", '{"channels": 6}',
                          "--checkpoint", "pruned.pth", "--data", "digits", "--batch-size", "50",
                          "--max-batches", "2", "--device", "cpu", "--out", "sparsity"], cwd=work, env=env))
    assert "net.0" in result.stdout and "wrote sparsity/sparsity.json" in result.stdout
    saved = json.loads((work / "sparsity" / "sparsity.json").read_text())
    assert set(saved) == {"total", "layers", "notes"}
    assert saved["total"]["samples"] == 100
    assert 0.1 < saved["layers"]["net.0"]["weight_sparsity"] < 1
    for key in ("sops", "energy_pj", "weight_sparsity"):
        assert any(key in str(k) for k in saved["total"]), key
    assert (work / "sparsity" / "sparsity.csv").stat().st_size > 0

    # a registry name: only inside the repository
    result = _run([tool, "--model", "sew_resnet18", "--checkpoint", "pruned.pth", "--data", "digits",
                   "--device", "cpu", "--out", "never"], cwd=work, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "snn-lats-measure: error: --model 'sew_resnet18' is a registry name, available inside the snn_lats "
        "repository; installed, use PACKAGE.MODULE:FACTORY")
    assert not (work / "never").exists()


def test_the_console_script_exports_a_users_pruned_model_to_nir(installed):
    pytest.importorskip("nir", reason="the [nir] extra (nir, nirtorch) is not installed")
    python, bin_dir, _, env, work = installed
    env = _user_package(work / "user_nir", env)
    save = textwrap.dedent("""
        import torch, snn_lats
        from my_nets.csnn import build_csnn as build
        torch.manual_seed(0)
        model = build(channels=6)
        snn_lats.MagnitudePruner(model, pruning_ratio=0.9, total_steps=1, initial_ratio=0.9)
        torch.save({"model": model.state_dict()}, "prepared.pth")  # the pruner's keys, not squashed
    """)
    _check(_run([python, "-c", save], cwd=work, env=env))
    tool = bin_dir / "snn-lats-export"
    result = _check(_run([tool, "--model", "my_nets.csnn:build_csnn", "--model-kwargs", '{"channels": 6}',
                          "--checkpoint", "prepared.pth", "--input-shape", "1,1,8,8", "--out", "csnn.nir",
                          "--figures", "figures.json", "--max-fan-in", "3"], cwd=work, env=env))
    assert "wrote csnn.nir" in result.stdout and "note: readout" in result.stdout
    figures = json.loads((work / "figures.json").read_text())
    layers = {f["module"]: f for f in figures["layers"].values()}
    assert set(layers) == {"net.0", "net.5"}
    # MagnitudePruner prunes 90 % of each layer: 5 of 54 conv weights and 96 of 960 linear ones remain
    assert [layers[n]["nonzero_weights"] for n in ("net.0", "net.5")] == [5, 96]
    assert figures["exceeding"] and all("fan-in" in line for line in figures["exceeding"])

    # what NIR cannot express: one line, exit code 2, nothing written
    result = _run([tool, "--model", "my_nets.csnn:build_spikformer", "--input-shape", "1,1,8,8", "--out",
                   "never.nir"], cwd=work, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("snn-lats-export: error: cannot export to NIR") and "matmul" in line
    assert not (work / "never.nir").exists()
