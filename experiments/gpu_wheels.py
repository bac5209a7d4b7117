"""`make gpu-wheels`: download, here, the wheels that the GPU machine's image lacks, into .whl/ (git-ignored).

    python -m experiments.gpu_wheels            # download (needs PyPI), check, then replace .whl/ whole
    python -m experiments.gpu_wheels --check    # check an existing .whl/, download nothing

The GPU machine has no network. Its python3 (3.12, x86-64) holds torch 2.11, CuPy and most of what the project
imports (IMAGE_PACKAGES), but not SpikingJelly or torch-pruning. CARRIED lists what it lacks; each wheel is
pinned to constraints.txt's version and fetched for CPython 3.12 on manylinux x86-64 with --no-deps (each of
their own needs is either carried too or in the image: check_wheels verifies this from the wheels' METADATA).
`python3 -m experiments.gpu_check --wheels .whl` installs them there with `pip install --no-index`.
See docs/gpu_check.md.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = Path(".whl")
CONSTRAINTS = Path("constraints.txt")

# What the image lacks, each with why it is needed (versions: constraints.txt)
CARRIED = {
    "spikingjelly": "the neurons, layers and SEW ResNets of every SNN path",
    "torch-pruning": "snn_lats.structured (OCSPruner) traces models with it",
    "loguru": "SpikingJelly 2.0 imports it at import (spikingjelly/logger.py)",
    "scienceplots": "a requirement in SpikingJelly 2.0's METADATA (only its surrogate plotting imports it)",
}

# The target interpreter: the GPU image's python3
PYTHON_VERSION = "3.12"
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
# pip matches each manylinux_2_N exactly; the image's glibc is newer than all of these
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")

# The image's Python packages, as the device documentation listed them (read on a machine on 2026-11-17)
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning
pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp
""".split())
# The versions seen there (same source); a requirement on one of these must admit it
IMAGE_VERSIONS = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "triton": "3.6.0",
                  "numpy": "2.5.2", "cupy-cuda13x": "14.2.0", "pytorch-lightning": "2.6.6",
                  "torchmetrics": "1.9.0", "safetensors": "0.8.0"}


def normalize(name: str) -> str:
    """PEP 503 name: `SciencePlots`, `torch_pruning` -> `scienceplots`, `torch-pruning`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints_text: str, names=tuple(CARRIED)) -> dict[str, str]:
    """Each of ``names`` with its `==` pin in constraints.txt's text; ValueError naming any unpinned one."""
    pins = {}
    for line in constraints_text.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if m:
            pins[normalize(m[1])] = m[2]
    missing = [n for n in names if normalize(n) not in pins]
    if missing:
        raise ValueError(f"constraints.txt pins no version of {', '.join(missing)}: add NAME==VERSION lines")
    return {normalize(n): pins[normalize(n)] for n in names}


def download_argv(python: str, dest: Path, pins: dict[str, str]) -> list[str]:
    """pip download for the GPU image's interpreter: binary wheels only, exact versions, no dependencies."""
    argv = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        argv += ["--platform", platform]
    return argv + ["-d", str(dest)] + [f"{name}=={version}" for name, version in pins.items()]


def parse_wheel_name(filename: str) -> tuple[str, str, list[tuple[str, str, str]]]:
    """`torch_pruning-1.6.1-py3-none-any.whl` -> ('torch-pruning', '1.6.1', [('py3', 'none', 'any')])."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        raise ValueError(f"{filename!r} is not a wheel file name (NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl)")
    py, abi, plat = parts[-3:]
    tags = [(p, a, pl) for p in py.split(".") for a in abi.split(".") for pl in plat.split(".")]
    return normalize(parts[0]), parts[1], tags


def fits_image(tags: list[tuple[str, str, str]]) -> bool:
    """Whether some tag installs on CPython 3.12, manylinux x86-64."""
    return any(py in ("py3", "py312", "cp312") and abi in ("none", "abi3", "cp312")
               and (plat == "any" or re.fullmatch(r"manylinux(1|2010|2014|_2_\d+)_x86_64", plat))
               for py, abi, plat in tags)


def wheel_metadata(path: Path):
    """The METADATA headers of a wheel (Requires-Dist, Requires-Python, ...)."""
    with zipfile.ZipFile(path) as zf:
        name = next((n for n in zf.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if name is None:
            raise ValueError(f"{path.name} has no *.dist-info/METADATA")
        return HeaderParser().parsestr(zf.read(name).decode("utf-8"))


def unmet_requirements(metadata, provided: set[str]) -> list[str]:
    """The Requires-Dist lines that apply on the image (markers evaluated for it, extras left out) and that
    neither ``provided`` nor the image's packages meet, or whose range excludes the image's version."""
    from packaging.requirements import Requirement  # here only; gpu_check needs none of this
    from packaging.specifiers import SpecifierSet

    problems = []
    requires_python = metadata.get("Requires-Python")
    if requires_python and not SpecifierSet(requires_python).contains(MARKER_ENV["python_full_version"]):
        problems.append(f"Requires-Python {requires_python} excludes the image's Python {PYTHON_VERSION}")
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(MARKER_ENV):
            continue
        name = normalize(req.name)
        if name in provided:
            continue
        if name not in IMAGE_PACKAGES:
            problems.append(f"needs {line.strip()}: not in the image and not carried (add it to CARRIED)")
        elif name in IMAGE_VERSIONS and not req.specifier.contains(IMAGE_VERSIONS[name], prereleases=True):
            problems.append(f"needs {line.strip()}, but the image has {name} {IMAGE_VERSIONS[name]}")
    return problems


def check_wheels(folder: Path, pins: dict[str, str], limit_bytes: int) -> list[str]:
    """Everything wrong with ``folder`` as the carried set; [] when it is exactly one wheel per pin, at its
    version, installable on the image, its needs met, and at most ``limit_bytes`` in all."""
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        return [f"{folder}: no wheels there (run `make gpu-wheels`)"]
    problems, seen = [], {}
    others = sorted(p.name for p in folder.iterdir() if p.suffix != ".whl")
    if others:
        problems.append(f"{folder}: files that are not wheels: {', '.join(others)}")
    for path in wheels:
        try:
            name, version, tags = parse_wheel_name(path.name)
        except ValueError as e:
            problems.append(str(e))
            continue
        if name in seen:
            problems.append(f"two wheels of {name}: {seen[name]} and {path.name} (pip refuses both)")
        seen[name] = path.name
        if name not in pins:
            problems.append(f"{path.name}: {name} is not carried (CARRIED: {', '.join(pins)})")
            continue
        if version != pins[name]:
            problems.append(f"{path.name}: version {version}, constraints.txt pins {pins[name]}")
        if not fits_image(tags):
            problems.append(f"{path.name}: does not install on CPython {PYTHON_VERSION} manylinux x86-64")
        problems += [f"{path.name}: {p}" for p in unmet_requirements(wheel_metadata(path), set(pins))]
    problems += [f"{name}=={version}: no wheel in {folder}"
                 for name, version in pins.items() if name not in seen]
    total = sum(p.stat().st_size for p in wheels)
    if total > limit_bytes:
        problems.append(f"{folder}: {total / 2**20:.1f} MiB of wheels, over the {limit_bytes / 2**20:.0f} "
                        "MiB allowed (the whole tree that travels to the GPU machine may be 64 MiB)")
    return problems


def travelling_bytes(root: Path = ROOT) -> int:
    """Bytes of what a device call sends without `carry`: tracked files plus untracked ones git does not
    ignore (the carried .whl/ comes on top)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    paths = (root / p for p in out.decode().split("\0") if p)
    return sum(p.stat().st_size for p in paths if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=DEST, help="the wheels folder (default: .whl)")
    parser.add_argument("--constraints", type=Path, default=CONSTRAINTS)
    parser.add_argument("--limit-mib", type=float, default=16.0,
                        help="largest size of the wheels (default 16; a device call carries 64 MiB in all)")
    parser.add_argument("--check", action="store_true", help="check --dest as it is; download nothing")
    args = parser.parse_args(argv)
    if not args.limit_mib > 0:
        parser.error(f"--limit-mib must be > 0, got {args.limit_mib}")
    dest = args.dest if args.dest.is_absolute() else ROOT / args.dest
    constraints = args.constraints if args.constraints.is_absolute() else ROOT / args.constraints
    try:
        pins = pinned_versions(constraints.read_text())
    except (OSError, ValueError) as e:
        parser.error(f"--constraints {args.constraints}: {e}")
    limit = int(args.limit_mib * 2**20)

    if args.check:
        problems = check_wheels(dest, pins, limit)
    else:
        # into a fresh folder first: a failed download or check leaves the old one as it was
        with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as tmp:
            fresh = Path(tmp) / "whl"
            print("$ " + " ".join(download_argv(sys.executable, fresh, pins)), flush=True)
            proc = subprocess.run(download_argv(sys.executable, fresh, pins))
            problems = ([f"pip download exited {proc.returncode}"] if proc.returncode
                        else check_wheels(fresh, pins, limit))
            if not problems:
                if dest.exists():
                    old = sorted(p.name for p in dest.iterdir())
                    print(f"replacing {dest} (held: {', '.join(old) or 'nothing'})")
                    shutil.rmtree(dest)
                shutil.copytree(fresh, dest)
    if problems:
        print("\n".join(["gpu-wheels: not usable on the GPU machine:"] + [f"  {p}" for p in problems]),
              file=sys.stderr)
        return 1
    wheels = sorted(dest.glob("*.whl"))
    for path in wheels:
        print(f"  {path.name}  {path.stat().st_size / 2**20:.2f} MiB")
    carried = sum(p.stat().st_size for p in wheels)
    print(f"{dest}: {len(wheels)} wheels, {carried / 2**20:.2f} MiB (limit {args.limit_mib:g} MiB)")
    try:
        tree = travelling_bytes()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"could not size the working tree with git ({e}): check it stays under 64 MiB with the wheels")
        return 0
    total = (tree + carried) / 2**20
    print(f"with the working tree ({tree / 2**20:.1f} MiB) a device call carries {total:.1f} of 64 MiB")
    if total > 64:
        print("gpu-wheels: that is over the 64 MiB a device call may carry", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
