"""experiments/gpu_wheels.py (`make gpu-wheels`): the carried set is pinned by constraints.txt, fetched for
the GPU image's Python 3.12 on x86-64, and checked: one wheel per pin, installable there, every need met by
the image or by another carried wheel, small. Also: the project's own requirements admit what the image holds
(torch 2.11). No network: the wheels here are built in the test's folder."""
from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from experiments import gpu_wheels
from tests.fake_wheels import make_wheel

ROOT = Path(__file__).resolve().parent.parent
PINS = {"spikingjelly": "2.0.0", "torch-pruning": "1.6.1", "loguru": "0.7.3", "scienceplots": "2.2.2"}


def test_versions_come_from_constraints_txt():
    assert gpu_wheels.pinned_versions((ROOT / "constraints.txt").read_text()) == PINS
    assert gpu_wheels.pinned_versions("SciencePlots==2.2.2\ntorch_pruning == 1.6.1  # why\n",
                                      ["scienceplots", "torch-pruning"]) == {"scienceplots": "2.2.2",
                                                                              "torch-pruning": "1.6.1"}
    with pytest.raises(ValueError, match="pins no version of loguru"):
        gpu_wheels.pinned_versions("loguru>=0.7\n", ["loguru"])


def test_download_is_binary_exact_and_for_the_image():
    argv = gpu_wheels.download_argv("PY", Path("dest"), PINS)
    assert argv[:4] == ["PY", "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(argv)
    assert argv[argv.index("--python-version") + 1] == "3.12"
    assert argv[argv.index("--implementation") + 1] == "cp"
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert platforms and all(p.startswith("manylinux") and p.endswith("_x86_64") for p in platforms)
    assert argv[argv.index("-d") + 1] == "dest"
    assert argv[-4:] == ["spikingjelly==2.0.0", "torch-pruning==1.6.1", "loguru==0.7.3",
                         "scienceplots==2.2.2"]


@pytest.mark.parametrize("filename, fits", [
    ("torch_pruning-1.6.1-py3-none-any.whl", True),
    ("SciencePlots-2.2.2-py2.py3-none-any.whl", True),
    ("numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", True),
    ("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.whl", False),  # another Python
    ("numpy-2.4.6-cp312-cp312-manylinux_2_28_aarch64.whl", False),  # another processor
    ("numpy-2.4.6-cp312-cp312-win_amd64.whl", False),
    ("pkg-1.0-1-py3-none-any.whl", True),  # with a build tag
])
def test_wheel_names_and_tags(filename, fits):
    name, version, tags = gpu_wheels.parse_wheel_name(filename)
    assert name == gpu_wheels.normalize(filename.split("-")[0]) and version == filename.split("-")[1]
    assert gpu_wheels.fits_image(tags) is fits


def test_parse_rejects_what_is_no_wheel():
    with pytest.raises(ValueError, match="not a wheel file name"):
        gpu_wheels.parse_wheel_name("spikingjelly-2.0.0.tar.gz")


def _good_set(folder: Path) -> None:
    make_wheel(folder, "spikingjelly", "2.0.0", requires_python=">=3.11",
               requires=("torch>=2.6.0", "loguru<1,>=0.7", "SciencePlots", "h5py", "numpy",
                         'triton>=3.2.0; extra == "triton"',
                         'megatron-core==0.18.2; python_version >= "3.12" and extra == "megatron"',
                         'pywin32; sys_platform == "win32"'))
    make_wheel(folder, "torch_pruning", "1.6.1", requires=("torch>=2.0", "numpy"))
    make_wheel(folder, "loguru", "0.7.3", requires=("colorama>=0.3.4 ; sys_platform=='win32'",))
    make_wheel(folder, "scienceplots", "2.2.2", requires=("matplotlib", "pytest; extra == \"test\""))


def test_a_complete_set_passes(tmp_path):
    _good_set(tmp_path)
    assert gpu_wheels.check_wheels(tmp_path, PINS, 2**20) == []


def test_every_problem_is_named(tmp_path):
    _good_set(tmp_path)
    (tmp_path / "loguru-0.7.3-py3-none-any.whl").unlink()  # a pin without its wheel
    make_wheel(tmp_path, "torch-pruning", "1.6.0")  # a second version
    make_wheel(tmp_path, "einops", "0.8.0")  # not carried
    make_wheel(tmp_path, "scienceplots", "2.2.2", tag="cp311-cp311-manylinux_2_28_x86_64")
    (tmp_path / "notes.txt").write_text("?")
    problems = "\n".join(gpu_wheels.check_wheels(tmp_path, PINS, 2**20))
    assert "loguru==0.7.3: no wheel" in problems
    assert "two wheels of torch-pruning" in problems
    assert "version 1.6.0, constraints.txt pins 1.6.1" in problems
    assert "einops is not carried" in problems
    assert "does not install on CPython 3.12" in problems
    assert "files that are not wheels: notes.txt" in problems


def test_needs_are_checked_against_the_image(tmp_path):
    make_wheel(tmp_path, "spikingjelly", "2.0.0", requires_python=">=3.13",
               requires=("loguru", "no-such-package>=1", "torch>=2.12", "numpy<2", "torchvision"))
    problems = "\n".join(gpu_wheels.check_wheels(tmp_path, {"spikingjelly": "2.0.0"}, 2**20))
    assert "Requires-Python >=3.13 excludes the image's Python 3.12" in problems
    assert "needs loguru: not in the image and not carried" in problems
    assert "needs no-such-package>=1: not in the image" in problems
    assert "needs torch>=2.12, but the image has torch 2.11.0" in problems
    assert "needs numpy<2, but the image has numpy 2.5.2" in problems
    assert "torchvision" not in problems  # in the image, version unconstrained


def test_size_limit(tmp_path):
    _good_set(tmp_path)
    make_wheel(tmp_path, "spikingjelly", "2.0.0", padding=2**20)  # replaces the small one
    problems = gpu_wheels.check_wheels(tmp_path, PINS, 2**20)
    assert len(problems) == 1 and "over the 1 MiB allowed" in problems[0]


def test_check_mode_prints_the_sizes(tmp_path, capsys):
    _good_set(tmp_path)
    constraints = tmp_path.parent / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in PINS.items()))
    assert gpu_wheels.main(["--check", "--dest", str(tmp_path), "--constraints", str(constraints)]) == 0
    out = capsys.readouterr().out
    assert "4 wheels" in out and "spikingjelly-2.0.0-py3-none-any.whl" in out and "of 64 MiB" in out
    (tmp_path / "loguru-0.7.3-py3-none-any.whl").unlink()
    assert gpu_wheels.main(["--check", "--dest", str(tmp_path), "--constraints", str(constraints)]) == 1
    assert "loguru==0.7.3: no wheel" in capsys.readouterr().err


def test_installed_spikingjelly_and_torch_pruning_needs_are_met_on_the_image():
    """The very METADATA of the pinned versions (installed here), without the wheels."""
    for name in ("spikingjelly", "torch-pruning", "loguru", "scienceplots"):
        dist = metadata.distribution(name)
        assert dist.version == PINS[name]
        assert gpu_wheels.unmet_requirements(dist.metadata, set(PINS)) == [], name


def test_project_requirements_admit_the_gpu_image():
    """What the library, the experiments and the GPU steps need is in the image (at a version each range
    admits: torch 2.11.0, torchvision 0.26.0, numpy 2.5.2) or carried (at constraints.txt's pin)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in
                    project["dependencies"] + extras["experiments"] + extras["lightning"] + extras["cuda"]]
    for req in requirements:
        name = gpu_wheels.normalize(req.name)
        if name in PINS:
            assert req.specifier.contains(PINS[name], prereleases=True), req
        else:
            assert name in gpu_wheels.IMAGE_PACKAGES, req
            if name in gpu_wheels.IMAGE_VERSIONS:
                assert req.specifier.contains(gpu_wheels.IMAGE_VERSIONS[name]), req
    assert {"torch", "spikingjelly", "torch-pruning"} <= {gpu_wheels.normalize(r.name) for r in requirements}


def test_the_downloaded_wheels_if_any():
    folder = ROOT / gpu_wheels.DEST
    if not any(folder.glob("*.whl")):
        pytest.skip(f"no {gpu_wheels.DEST}/ here: `make gpu-wheels` downloads it (needs PyPI)")
    assert gpu_wheels.check_wheels(folder, PINS, 16 * 2**20) == []
