"""Property tests of the command-line tools and of the checkpoint files they read (issue 25).

experiments.train, ``python -m snn_lats.cli.measure`` (snn-lats-measure) and experiments.pick_from_trail are
fed generated flag values, YAML configurations and checkpoint files (truncated, corrupt, of another model,
of another dtype, with NaN, a zip that unpacks to far more than its size, a pickle that would run code). Each
run either works (its files are there and load) or exits with code 2 and one line on stderr, having written
nothing, and no file ever runs code. The sweep's generated files are in tests/test_sweep_reliability.py; the
train.py command line alone in tests/test_properties.py.
"""
from __future__ import annotations

import copy
import io
import math
import os
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import models
from experiments import pick_from_trail, train
from snn_lats.checkpoint import load_checkpoint, load_plain_weights, model_state_from_checkpoint
from snn_lats.cli import measure as measure_cli
from snn_lats.trail import Trail
from tests.test_train import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KWARGS = dict(T=2, neuron_type="lif", stem="cifar", in_channels=1, num_classes=10, width_multiplier=0.125)
# one short epoch of the tiny SEW ResNet on digits: about a second when it runs
RUN = [*TINY, "--epochs", "1", "--max-steps-per-epoch", "1", "--train-subset", "64"]


def props(examples: int):
    """No deadline (a loaded machine), no example database in the working tree, the same examples on every
    run (derandomized: a verdict never depends on the draw; ``SNN_LATS_PROPERTY_SCALE=10`` hunts ten times as
    many, from a random seed); every example makes its own folders, so the function-scoped fixtures (capsys,
    tmp_path_factory) are safe."""
    scale = float(os.environ.get("SNN_LATS_PROPERTY_SCALE", "1"))
    return settings(max_examples=max(1, round(examples * scale)), deadline=None, database=None,
                    derandomize=scale == 1,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Outcome:
    """How a command ended: ``code`` (0 when it returned normally) and what it wrote to stderr."""

    def __init__(self, code: int, err: str):
        self.code, self.err = code, err


def invoke(command, argv: list[str], capsys) -> Outcome:
    capsys.readouterr()
    try:
        code = command(argv)
    except SystemExit as exc:
        code = exc.code
    code = 0 if code is None else code
    return Outcome(code, capsys.readouterr().err)


def check_refusal(outcome: Outcome, prog: str, *written: Path) -> None:
    """Exit code 2, one line ``PROG: error: ...`` (after argparse's usage for its own errors), no traceback,
    and none of ``written`` exists."""
    assert outcome.code == 2, (outcome.code, outcome.err)
    assert "Traceback" not in outcome.err, outcome.err
    lines = outcome.err.rstrip("\n").split("\n")
    error = [i for i, line in enumerate(lines) if line.startswith(f"{prog}: error: ")]
    assert error == [len(lines) - 1], f"not one error line at the end: {outcome.err!r}"
    if len(lines) > 1:
        assert lines[0].startswith("usage: "), outcome.err
    for path in written:
        assert not path.exists(), f"a refused command wrote {path}"


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "snn_lats_property_payload_ran"


class Payload:
    """A pickle that would create MARKER when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


# --- checkpoint files ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A real training checkpoint (1 epoch of RUN) and a plain measure checkpoint of the same model, as bytes
    and as objects: what the mutations start from."""
    folder = tmp_path_factory.mktemp("ckpt")
    assert train.cli([*RUN, "--output-dir", str(folder / "run")]) == 0
    trained = torch.load(folder / "run" / "checkpoint_last.pth", weights_only=True)
    model = models.create_model("sew_resnet18", **KWARGS)
    plain = {"model": model.state_dict(), "model_name": "sew_resnet18", "model_kwargs": KWARGS}
    return {"train": trained, "plain": plain, "folder": folder}


def _tensor_keys(state: dict) -> list[str]:
    return sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point())


MUTATIONS = ["good", "truncate", "flip", "junk", "append", "deflate", "nan", "inf", "float64", "int64",
             "shape", "drop", "add", "payload", "list", "tensor", "other-model", "empty"]
# what was done to the file, as hypothesis shows it: (kind, which tensor, where, how much); the bytes are made
# from it (a drawn blob of megabytes would be printed whole)
MUTATION = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10**6), st.floats(0, 1), st.integers(1, 64))


def mutated(source: dict, mutation: tuple, params: set[str]) -> tuple[bytes, bool]:
    """(the file's bytes, whether a loader may take it): ``source`` saved, then changed as a disk, a user or
    an attacker would change it."""
    kind, pick, where, size = mutation
    obj = copy.deepcopy({k: v for k, v in source.items() if k != "path"})
    state = obj["model"]
    keys = _tensor_keys(state)
    key = keys[pick % len(keys)]
    loads = kind in ("good", "float64", "flip", "append") or (kind == "inf" and key not in params)
    if kind in ("nan", "inf"):
        state[key] = state[key].clone()
        state[key].view(-1)[int(where * (state[key].numel() - 1))] = math.nan if kind == "nan" else -math.inf
    elif kind in ("float64", "int64"):
        state[key] = state[key].to(getattr(torch, kind))
    elif kind == "shape":
        state[key] = torch.zeros(*state[key].shape, 2)
    elif kind == "drop":
        del state[key]
    elif kind == "add":
        state["extra.weight"] = torch.ones(2)
    elif kind == "payload":
        obj["model_kwargs"] = Payload()
    elif kind == "list":
        obj = [state]
    elif kind == "tensor":
        obj = torch.ones(3)
    elif kind == "other-model":
        obj["model"] = models.create_model("resnet18", num_classes=10, in_channels=1).state_dict()
    elif kind == "empty":
        obj = {}
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    at = int(where * (len(data) - 1))
    if kind == "truncate":
        data = data[:at]
    elif kind == "flip":  # a few bytes anywhere: a tensor's values (loads) or the zip's structure (refused)
        data = data[:at] + bytes(b ^ 0xFF for b in data[at:at + size]) + data[at + size:]
    elif kind == "junk":
        data = bytes((pick + i * 31) % 256 for i in range(size))
    elif kind == "append":
        data = data + bytes(range(size))
    elif kind == "deflate":  # each entry compressed, plus one that unpacks to 64 MiB of zeros
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
            dst.writestr(src.infolist()[0].filename.split("/")[0] + "/data/bomb", bytes(64 << 20))
        data = out.getvalue()
    return data, loads


def _write(folder: Path, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "file.pth"
    path.write_bytes(data)
    return path


PARAMS = {name for name, _ in models.create_model("sew_resnet18", **KWARGS).named_parameters()}


@props(80)
@given(mutation=MUTATION)
@example(mutation=("good", 0, 0.0, 1))
@example(mutation=("payload", 0, 0.0, 1))
@example(mutation=("deflate", 0, 0.0, 1))
def test_load_checkpoint_and_load_plain_weights_load_or_say_why(checkpoints, tmp_path_factory, mutation):
    """The library's loaders on a changed file: it loads (the model's weights are then the file's), or a
    ValueError says why and the model is untouched; nothing in it runs."""
    blob, loads = mutated(checkpoints["plain"], mutation, PARAMS)
    path = _write(tmp_path_factory.mktemp("load"), blob)
    model = models.create_model("sew_resnet18", **KWARGS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        load_plain_weights(model, model_state_from_checkpoint(load_checkpoint(path)))
    except ValueError as exc:
        assert not loads or mutation[0] in ("flip", "append"), f"{mutation[0]} refused: {exc}"
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items()), "a refused load changed the model"
    else:
        assert loads, f"{mutation[0]} loaded"
        saved = torch.load(path, weights_only=True)["model"]
        for k, v in model.state_dict().items():
            assert torch.equal(v, saved[k].to(v.dtype)), k
    assert not MARKER.exists(), "a checkpoint ran code"


@props(10)
@given(mutation=MUTATION)
def test_measure_cli_on_checkpoint_files(checkpoints, tmp_path_factory, capsys, mutation):
    blob, loads = mutated(checkpoints["plain"], mutation, PARAMS)
    folder = tmp_path_factory.mktemp("measure")
    path = _write(folder, blob)
    out = folder / "out"
    outcome = invoke(measure_cli.main, ["--checkpoint", str(path), "--data", "digits", "--max-batches", "1",
                                        "--batch-size", "16", "--device", "cpu", "--out", str(out)], capsys)
    if outcome.code == 0:
        assert loads, (mutation, outcome.err)
        assert (out / "sparsity.json").stat().st_size > 0
    else:
        check_refusal(outcome, "snn-lats-measure", out)
    assert not MARKER.exists(), "a checkpoint ran code"


@pytest.mark.slow
@props(8)
@given(mutation=MUTATION, flag=st.sampled_from(["--resume", "--pretrained"]))
def test_train_on_checkpoint_files(checkpoints, tmp_path_factory, capsys, mutation, flag):
    source = checkpoints["train"] if flag == "--resume" else checkpoints["plain"]
    blob, loads = mutated(source, mutation, PARAMS)
    folder = tmp_path_factory.mktemp("train")
    path = _write(folder, blob)
    out = folder / "out"
    outcome = invoke(train.cli, [*RUN, flag, str(path), "--output-dir", str(out)], capsys)
    if outcome.code == 0:
        assert loads, (mutation, outcome.err)
        assert flag == "--resume" or torch.load(out / "checkpoint_last.pth", weights_only=True)["epoch"] == 0
    else:
        check_refusal(outcome, "python -m experiments.train", out)
    assert not MARKER.exists(), "a checkpoint ran code"


# --- experiments.train: generated flag values and YAML ------------------------------------------------------

NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "-0.0", "1e-300", "0.5", "1", "2", "1e308", "x",
                           ""])
NUMERIC_OPTIONS = ["lr", "momentum", "weight_decay", "label_smoothing", "T", "width_multiplier",
                   "final_threshold", "beta", "l1_coefficient", "warmup_epochs", "freeze_epoch",
                   "pruning_ratio", "pruning_start_epoch", "l0_weight", "temperature", "threshold_lr",
                   "epochs", "batch_size", "seed"]
YAML_NUMBERS = st.one_of(st.sampled_from([math.nan, math.inf, -1, 0, 0.5, 1, 2, True, "x", None, [1]]),
                         st.floats(-2, 2))


@pytest.mark.slow
@props(14)
@given(method=st.sampled_from(["s-lats", "gmp", "ltp", "lr", "pgh", "dense"]),
       flags=st.dictionaries(st.sampled_from(NUMERIC_OPTIONS), NUMBERS, max_size=2),
       config=st.dictionaries(st.sampled_from(NUMERIC_OPTIONS), YAML_NUMBERS, max_size=2),
       raw=st.sampled_from([None, None, "!!python/object/apply:os.system ['touch MARKER']\n",
                            "lr: !!python/name:os.system\n"]))
@example(method="s-lats", flags={"lr": "inf"}, config={}, raw=None)  # started training before
@example(method="s-lats", flags={"T": "0"}, config={}, raw=None)  # a traceback from the model
@example(method="s-lats", flags={"final_threshold": "1e308"}, config={}, raw=None)  # overflow at step 1
def test_train_cli_on_generated_flags_and_config(tmp_path_factory, capsys, method, flags, config, raw):
    folder = tmp_path_factory.mktemp("flags")
    config_path = folder / "config.yaml"
    text = yaml.safe_dump(config) if raw is None else raw.replace("MARKER", str(MARKER))
    config_path.write_text(text)
    argv = [*RUN, "--method", method, "-c", str(config_path)]
    if method in ("s-lats", "pgh") and "final_threshold" not in flags and "final_threshold" not in config:
        argv += ["--final-threshold", "0.05"]
    if method == "lr" and "final_threshold" not in flags:
        argv += ["--l1-coefficient", "0.01"]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", value]
    out = folder / "out"
    outcome = invoke(train.cli, [*argv, "--output-dir", str(out)], capsys)
    if outcome.code == 0:
        assert torch.load(out / "checkpoint_last.pth", weights_only=True)["epoch"] >= 0
    else:
        check_refusal(outcome, "python -m experiments.train", out)
    assert not MARKER.exists(), "a config file ran code"


# --- snn-lats-measure: generated flag values ----------------------------------------------------------------

@pytest.fixture(scope="module")
def measure_checkpoint(checkpoints):
    path = checkpoints["folder"] / "plain.pth"
    torch.save(checkpoints["plain"], path)
    return path


@props(14)
@given(flags=st.dictionaries(st.sampled_from(["--batch-size", "--max-batches", "--workers", "--e-ac",
                                              "--e-mac", "--device", "--model", "--model-kwargs", "--data",
                                              "--data-path"]),
                             st.sampled_from(["nan", "inf", "-1", "0", "1", "0.5", "1e308", "x", "", "cpu",
                                              "cuda", "meta", "{}", "[1]", '{"T": 0}', "digits", "resnet18",
                                              "sew_resnet18", "os:system", "nope.nope:f"]), max_size=3),
       out_kind=st.sampled_from(["new", "new", "file", "nested"]))
@example(flags={"--e-ac": "nan"}, out_kind="new")  # measured with NaN energies before
@example(flags={}, out_kind="file")  # measured, then a traceback writing the report
def test_measure_cli_on_generated_flags(measure_checkpoint, tmp_path_factory, capsys, flags, out_kind):
    folder = tmp_path_factory.mktemp("mflags")
    out = {"new": folder / "out", "nested": folder / "a" / "b", "file": folder / "taken"}[out_kind]
    if out_kind == "file":
        out.write_text("a file where the report folder goes")
    argv = ["--checkpoint", str(measure_checkpoint), "--data", "digits", "--max-batches", "1", "--batch-size",
            "16", "--device", "cpu", "--out", str(out)]
    for flag, value in flags.items():
        argv += [flag, value]
    outcome = invoke(measure_cli.main, argv, capsys)
    if outcome.code == 0:
        assert (out / "sparsity.json").stat().st_size > 0
    else:
        check_refusal(outcome, "snn-lats-measure", *([] if out_kind == "file" else [out]))
        if out_kind == "file":
            assert out.read_text() == "a file where the report folder goes"


# --- pick_from_trail: generated trails and budgets ----------------------------------------------------------

ENTRY_VALUES = st.one_of(st.sampled_from([0, 1, 50.0, 90.0, 0.5, 1.0, 2.0, -1, math.nan, math.inf, None,
                                          "x", True, [1]]), st.floats(0, 1))
PATHS = st.sampled_from(["epoch_001.pth", "epoch_002.pth", "missing.pth", "../secret.txt", "/etc/passwd",
                         "..", "", "sub/epoch_001.pth", 3])


@props(40)
@given(entries=st.lists(st.fixed_dictionaries({"epoch": ENTRY_VALUES, "acc1": ENTRY_VALUES,
                                               "sparsity": ENTRY_VALUES, "path": PATHS},
                                              optional={"extra": ENTRY_VALUES}), max_size=3),
       budget=st.dictionaries(st.sampled_from(["--min-acc", "--min-sparsity"]),
                              st.sampled_from(["nan", "inf", "-1", "0", "0.5", "1", "2", "50", "x"]),
                              max_size=2),
       copy_to=st.sampled_from([None, "new", "dir", "nested"]))
@example(entries=[{"epoch": 1, "acc1": 90.0, "sparsity": 0.5, "path": "../secret.txt"}],
         budget={"--min-acc": "0"}, copy_to="new")  # copied a file from outside the trail before
@example(entries=[{"epoch": 1, "acc1": 90.0, "sparsity": 0.5, "path": "epoch_001.pth"}],
         budget={"--min-acc": "nan"}, copy_to=None)  # a traceback from pick()
def test_pick_from_trail_on_generated_trails(tmp_path_factory, capsys, entries, budget, copy_to):
    folder = tmp_path_factory.mktemp("trail")
    (folder / "secret.txt").write_text("secret")
    trail = Trail(folder / "trail")
    for epoch in (1, 2):
        trail.add({"w": torch.full((2,), float(epoch))}, epoch=epoch, acc1=50.0 * epoch, sparsity=0.4 * epoch)
    (folder / "trail" / "index.json").write_text(__import__("json").dumps(entries))
    target = {None: None, "new": folder / "picked.pth", "dir": folder / "trail",
              "nested": folder / "no" / "such" / "picked.pth"}[copy_to]
    argv = [str(folder / "trail"), *(x for pair in budget.items() for x in pair)]
    if target is not None:
        argv += ["--copy-to", str(target)]
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    outcome = invoke(pick_from_trail.main, argv, capsys)
    after = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    if outcome.code == 0:
        if target is not None:  # the pick's bytes, from inside the trail
            copied = target.read_bytes()
            picked = [p for p in (folder / "trail").glob("epoch_*.pth") if p.read_bytes() == copied]
            assert picked, "copied something that is not a checkpoint of the trail"
    elif outcome.code == 1:  # documented: no checkpoint meets the budget
        assert after == before and "no checkpoint meets the budget" in outcome.err
    else:
        assert outcome.code == 2 and "Traceback" not in outcome.err, outcome.err
        assert outcome.err.strip().count("\n") <= 1 or outcome.err.startswith("usage"), outcome.err
        assert after == before, "a refused pick wrote something"
    assert (folder / "secret.txt").read_text() == "secret"


# --- the entry points themselves ----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_module_entry_point_exits_2_with_one_line(tmp_path):
    """``python -m experiments.train`` runs cli() as the tests above call it: the exit code and the one line
    reach the shell (a refusal from inside the pipeline, not argparse's). snn-lats-measure's entry point is
    main(), as called above."""
    import subprocess
    import sys

    from tests.conftest import HANG
    from tests.test_train import ENV, ROOT

    result = subprocess.run([sys.executable, "-m", "experiments.train", *RUN, "--ignored-layers", "fcc",
                             "--output-dir", str(tmp_path / "out")], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=HANG)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "ignored_layers: 'fcc' names no module" in result.stderr and not (tmp_path / "out").exists()
