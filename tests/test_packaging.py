"""Packaging: what pyproject.toml requires is what the library imports, ranges not pins, and constraints.txt
pins the tested environment (issue #17, items 1 and 2)."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "snn_lats"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# import name -> distribution that provides it
DISTRIBUTION = {
    "torch": "torch",
    "spikingjelly": "spikingjelly",
    "torch_pruning": "torch-pruning",
    "numpy": "numpy",
    "cupy": "cupy-cuda13x",
    "lightning": "lightning",
    "torchvision": "torchvision",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tensorboard": "tensorboard",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "PIL": "pillow",
    "nir": "nir",
    "nirtorch": "nirtorch",
    "neurobench": "neurobench",
}
# modules that exist for one extra: they may import its package at module level, and no module outside them
# may import them at module level (so `import snn_lats` and its subpackages work without the extra)
EXTRA_MODULES = {"snn_lats/integrations/lightning.py": "lightning",
                 "snn_lats/integrations/neurobench.py": "neurobench"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(spec: str) -> tuple[str, str]:
    """``"torch>=2.4"`` -> ``("torch", ">=2.4")``; extras (``name[x]``) are left in the rest."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)", spec)
    assert m, f"cannot parse requirement {spec!r}"
    return normalise(m.group(1)), m.group(2).strip()


def required() -> dict[str, str]:
    return dict(requirement(s) for s in PROJECT["dependencies"])


def extra(name: str) -> dict[str, str]:
    """The extra's requirements, with ``snn_lats[other]`` expanded."""
    out: dict[str, str] = {}
    for spec in PROJECT["optional-dependencies"][name]:
        dist, rest = requirement(spec)
        if dist == normalise(PROJECT["name"]):
            for inner in re.findall(r"[A-Za-z0-9_-]+", rest.strip("[]")):
                out.update(extra(inner))
        else:
            out[dist] = rest
    return out


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[normalise(name)] = version.strip()
    return pins


def third_party_imports() -> list[tuple[str, int, str, bool]]:
    """(file, line, top-level name, at module level) for every absolute non-stdlib import in snn_lats/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        lazy: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                lazy.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__" or top == "snn_lats":
                    continue
                found.append((rel, node.lineno, top, id(node) not in lazy))
    return found


def test_no_exact_pins_on_torch_torchvision_spikingjelly():
    groups = {"dependencies": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    for group, specs in groups.items():
        for spec in specs:
            dist, rest = requirement(spec)
            if dist in ("torch", "torchvision", "spikingjelly"):
                assert "==" not in rest and "===" not in rest, (
                    f"pyproject.toml [{group}] pins {spec!r} exactly: declare a range, pin it in "
                    "constraints.txt")


def test_library_requires_only_torch_spikingjelly_torch_pruning_numpy():
    assert set(required()) == {"torch", "spikingjelly", "torch-pruning", "numpy"}
    for dist, rest in required().items():
        assert rest.startswith(">="), f"{dist}: give the lowest version the library needs, got {rest!r}"


def test_every_required_dependency_is_imported_by_the_library():
    imported = {normalise(DISTRIBUTION.get(top, top)) for _, _, top, _ in third_party_imports()}
    unused = set(required()) - imported
    assert not unused, f"required but never imported in snn_lats/: {sorted(unused)} (move to an extra)"


def test_every_library_import_is_required_or_lazy():
    req = set(required())
    extras = {dist for name in PROJECT["optional-dependencies"] for dist in extra(name)}
    problems = []
    for rel, line, top, module_level in third_party_imports():
        if top not in DISTRIBUTION:
            problems.append(f"{rel}:{line}: import {top}: unknown distribution (add it to DISTRIBUTION)")
            continue
        dist = normalise(DISTRIBUTION[top])
        if dist in req:
            continue
        if dist not in extras:
            problems.append(f"{rel}:{line}: import {top}: {dist} is neither required nor in an extra")
        elif module_level and EXTRA_MODULES.get(rel) != top:
            problems.append(f"{rel}:{line}: import {top} at module level, but {dist} is only in an extra: "
                            "import it inside the function that needs it")
    assert not problems, "\n".join(problems)


def test_extra_only_modules_are_not_imported_eagerly():
    # e.g. snn_lats.integrations.lightning: only `from snn_lats.integrations.lightning import ...` loads it
    dotted = {rel[:-3].replace("/", ".") for rel in EXTRA_MODULES}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level
            if isinstance(node, ast.ImportFrom):
                assert node.module not in dotted and not any(
                    f"{node.module}.{a.name}" in dotted for a in node.names if node.module), (
                    f"{path.relative_to(ROOT)} imports an extra-only module at module level")
            elif isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & dotted


def test_constraints_pin_the_tested_environment():
    pins = constraints()
    assert pins.get("torch") == "2.14.1"
    assert pins.get("torchvision") == "0.29.1"
    assert normalise(PROJECT["name"]) not in pins, "constraints.txt must not pin snn_lats itself"
    wanted = set(required()) | set(extra("dev"))
    missing = sorted(wanted - set(pins))
    assert not missing, f"constraints.txt does not pin {missing}"


def test_cuda_extra_is_cupy_for_cuda_13():
    cuda = extra("cuda")
    assert "cupy-cuda13x" in cuda and not any(d.startswith("cupy-cuda12") for d in cuda)


def test_version_is_written_once():
    import snn_lats

    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "snn_lats.__version__"}
    try:
        installed = importlib.metadata.version("snn_lats")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("snn_lats is not installed (pip install -e .)")
    assert snn_lats.__version__ == installed
    cff = re.search(r"^version:\s*(\S+)", (ROOT / "CITATION.cff").read_text(), re.M)
    assert cff and cff.group(1).strip("\"'") == snn_lats.__version__, "CITATION.cff's version lags"


def test_license_and_typing_marker_ship():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (PACKAGE / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["snn_lats"]
    floors = [int(m.group(1)) for r in PYPROJECT["build-system"]["requires"]
              if (m := re.match(r"setuptools>=(\d+)", r))]
    assert floors and floors[0] >= 77, "SPDX license and license-files need setuptools>=77"
