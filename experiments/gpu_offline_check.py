"""`make gpu-offline-check`: rehearse here, with no package index, what gpu-check does on the GPU machine.

    python -m experiments.gpu_offline_check --wheels .whl --find-links /opt/wheels \
        --find-links /opt/pypi/files

A fresh virtual environment gets torch and numpy from local wheel folders (--find-links, `pip --no-index`,
no pip configuration) and nothing else: the GPU machine's python3 has torch and numpy, and the carried wheels
(`make gpu-wheels`) must supply the rest of what the library imports. In it, with the network cut off where
`unshare -n` works (else it says so): the venv must not import SpikingJelly; gpu_check's --dry-run with the
wheels; gpu_check without CUDA must exit 2 having installed and written nothing; gpu_check --install-only
(the very offline install the GPU run does, then the carried imports); and a smoke run of the library on what
was installed (fused neurons equal SpikingJelly's LIF, S-LATS zeroes what it should, torch-pruning traces the
SNN). The GPU image's Python is 3.12 and this one's may differ: the carried wheels are all py3-none-any, so
the install is the same one. Exit 0 when every check passes.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRIED_PACKAGES = ("spikingjelly", "torch_pruning", "loguru", "scienceplots")  # top-level import names


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _clean_env(pythonpath: str | None = None) -> dict[str, str]:
    """No pip configuration or PIP_* variables (this machine's point at local mirrors), no inherited
    PYTHONPATH: the venv sees only what is named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env["PIP_CONFIG_FILE"] = os.devnull
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def network_cut() -> list[str]:
    """The argv prefix that runs a command with no network (`unshare -n`), or [] where that is refused."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ["unshare", "-n"] if ok else []


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(proc: subprocess.CompletedProcess, n: int = 1500) -> str:
    return (proc.stdout + proc.stderr).strip()[-n:]


def rehearse(wheels: Path, find_links: list[Path], work: Path, torch_req: str = "torch",
             base_python: str = sys.executable, cut: list[str] | None = None) -> list[Check]:
    """Every check, in order; stops after a check that later ones depend on fails."""
    cut = network_cut() if cut is None else cut
    checks = []
    venv, site, out = work / "venv", work / "site", work / "out"
    py = str(venv / "bin" / "python")
    env = _clean_env()

    def check(name: str, proc: subprocess.CompletedProcess, ok: bool) -> bool:
        checks.append(Check(name, ok, f"exit {proc.returncode}: {_tail(proc)}"))
        print(f"{'ok  ' if ok else 'FAIL'} {name}", flush=True)
        return ok

    checks.append(Check("network", bool(cut), "the commands below run under `unshare -n` (no network)" if cut
                        else "unshare -n is refused here: commands ran with the network (still --no-index)"))
    proc = _run([base_python, "-m", "venv", str(venv)], env)
    if not check("fresh venv", proc, proc.returncode == 0):
        return checks
    links = [a for d in find_links for a in ("--find-links", str(d))]
    proc = _run(cut + [py, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--quiet",
                       *links, torch_req, "numpy"], env)
    if not check(f"torch and numpy from {', '.join(map(str, find_links))} (--no-index)", proc,
                 proc.returncode == 0):
        return checks
    proc = _run([py, "-m", "pip", "list", "--disable-pip-version-check", "--format", "freeze"], env)
    held = {line.split("==")[0].lower() for line in proc.stdout.split()}
    check(f"venv holds torch and its needs only ({', '.join(sorted(held))})", proc,
          proc.returncode == 0 and "torch" in held and not held & {"spikingjelly", "torch-pruning", "loguru"})
    proc = _run([py, "-c", "import spikingjelly"], env)
    check("SpikingJelly does not import before the install", proc, proc.returncode != 0)

    gpu_check = [py, "-m", "experiments.gpu_check", "--wheels", str(wheels), "--site", str(site)]
    proc = _run(cut + gpu_check + ["--dry-run"], env)
    check("gpu_check --dry-run lists the offline install first", proc, proc.returncode == 0 and
          "1. install-wheels" in proc.stdout and "--no-index" in proc.stdout)
    proc = _run(cut + gpu_check + ["--out", str(out)], env)
    check("gpu_check without CUDA exits 2, installing and writing nothing", proc, proc.returncode == 2 and
          "needs a CUDA GPU" in proc.stderr and not site.exists() and not out.exists())
    proc = _run(cut + gpu_check + ["--install-only"], env)
    installed = sorted(p.name for p in site.iterdir()) if site.is_dir() else []
    if not check("gpu_check --install-only: offline install, then the carried imports", proc,
                 proc.returncode == 0 and all(p in installed for p in CARRIED_PACKAGES)):
        return checks
    proc = _run(cut + [py, "-m", "experiments.gpu_offline_check", "--smoke", str(site)],
                _clean_env(os.pathsep.join([str(site), str(ROOT)])))
    check("smoke run on the installed wheels", proc, proc.returncode == 0)
    return checks


def smoke(site: Path | None = None) -> None:
    """The library on the carried packages (from ``site``, when given): raises AssertionError on the first
    wrong result."""
    import copy

    import spikingjelly
    import torch
    import torch_pruning
    from spikingjelly.activation_based import functional, layer, neuron
    from torch import nn

    import snn_lats
    from snn_lats.snn import use_fused_neurons
    from snn_lats.structured import build_channel_groups

    for mod in (spikingjelly, torch_pruning) if site is not None else ():
        where = Path(mod.__file__).resolve()
        assert where.is_relative_to(site.resolve()), f"{mod.__name__} from {where}"
    print(f"torch {torch.__version__}, spikingjelly from {Path(spikingjelly.__file__).parent}")
    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 8, 3, padding=1), layer.BatchNorm2d(8),
                        neuron.LIFNode(tau=2.0, detach_reset=True), layer.Conv2d(8, 8, 3, padding=1),
                        neuron.LIFNode(), layer.Flatten(), layer.Linear(8 * 36, 3))
    functional.set_step_mode(net, "m")
    fused = copy.deepcopy(net)
    report = use_fused_neurons(fused, backend="torch")
    assert len(report.replaced) == 2 and not report.unsupported, str(report)
    x = torch.rand(4, 2, 2, 6, 6) * 2  # T, B, C, H, W
    out_sj, out_fused = net(x), fused(x)
    assert torch.equal(out_fused, out_sj), "fused LIF differs from SpikingJelly's"
    out_sj.square().sum().backward()
    out_fused.square().sum().backward()
    torch.testing.assert_close(fused[0].weight.grad, net[0].weight.grad)
    functional.reset_net(fused)
    print("fused LIF = SpikingJelly LIF (outputs exact, gradients close)")

    d = 0.05
    pruner = snn_lats.SoftThresholdPruner(fused, final_threshold=d, schedule="s-lats", total_steps=1,
                                          ignored_layers=["6"])
    pruner.step()
    theta = [fused[i].parametrizations.weight.original.detach() for i in (0, 3)]
    expected = sum(int((t.abs() <= d).sum()) for t in theta) / sum(t.numel() for t in theta)
    assert pruner.threshold == d and pruner.sparsity_report().sparsity == expected
    assert all(bool((fused[i].weight[(t.abs() <= d)] == 0).all()) for i, t in zip((0, 3), theta, strict=True))
    print(f"S-LATS: sparsity {expected:.4f} = the share of |theta| <= {d}")

    info = build_channel_groups(fused, x)
    assert sorted(g.key for g in info.groups) == ["0", "3"] and info.classifier == "6", info.groups
    print("torch-pruning: channel groups of both convs, the classifier ignored")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, default=Path(".whl"),
                        help="the carried wheels (make gpu-wheels)")
    parser.add_argument("--find-links", type=Path, action="append", default=[],
                        help="a local folder holding a torch wheel (and its needs); repeat for several")
    parser.add_argument("--torch", default="torch", help="the torch requirement (default: the newest found)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="build here and keep it (default: a temporary folder)")
    parser.add_argument("--smoke", type=Path, metavar="SITE", default=None,
                        help="(inside the rehearsal) the smoke run, SITE holding the installed wheels")
    args = parser.parse_args(argv)
    if args.smoke is not None:
        smoke(args.smoke)
        return 0
    wheels = args.wheels if args.wheels.is_absolute() else ROOT / args.wheels
    if not any(wheels.glob("*.whl")):
        parser.error(f"--wheels {args.wheels}: no .whl files there; run `make gpu-wheels` first")
    links = [d for d in args.find_links if d.is_dir()]
    if not links:
        parser.error("--find-links: name at least one existing folder holding a torch wheel")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty")
    work = args.keep or Path(tempfile.mkdtemp(prefix="gpu-offline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        checks = rehearse(wheels.resolve(), [d.resolve() for d in links], work.resolve(), args.torch)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    failed = [c for c in checks if not c.ok and c.name != "network"]
    for c in checks:
        if not c.ok or c.name.startswith("smoke"):
            print(f"\n-- {c.name}:\n{c.detail}", file=sys.stderr if c in failed else sys.stdout)
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + (f"; FAILED: {len(failed)}"
                                                                           if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
