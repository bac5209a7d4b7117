"""snn-lats-export: a (pruned) model to a NIR file, with its deployment figures per layer.

    snn-lats-export --checkpoint runs/demo/checkpoint_best.pth --out model.nir      # inside the repository
    snn-lats-export --model my_pkg.nets:build_csnn --model-kwargs '{"width": 8}' \\
        --checkpoint pruned.pth --input-shape 1,1,28,28 --out model.nir --figures figures.json --max-fan-in 63

(``python -m snn_lats.cli.export`` is the same.) The model comes as snn-lats-measure builds it: from a
training checkpoint of experiments/train.py (which names its model and keyword arguments), or --model
PACKAGE.MODULE:FACTORY (or a registry name inside the repository) with --model-kwargs and, optionally,
--checkpoint (a training checkpoint, a prepared or a squashed state_dict). --input-shape is the example
input the model takes, comma-separated: B,C,H,W for the models/ wrappers and single-step networks,
T,B,C,H,W for a multi-step one; by default (1, C, H, W) of the data set the checkpoint was trained on.

Writes the NIR graph to --out (atomically: nothing is written when the export fails) and prints the
deployment figures (neurons, synapses, fan-in and fan-out, weight memory under dense and sparse storage at
32/16/8 bits); --figures also writes them as JSON. --max-fan-in, --max-fan-out, --max-synapses and
--max-neurons name every layer beyond them (docs/deploy.md lists public limits of Loihi, Xylo and Speck).
What NIR cannot express is refused, each module named; --on-unsupported warn exports NIR's neuron model where
a setting has none (soft reset, a surrogate with spiking=False). Errors are one line and exit code 2. Needs
the [nir] extra: pip install snn_lats[nir].
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from snn_lats.checkpoint import load_checkpoint
from snn_lats.cli.data import INPUT_SHAPES
from snn_lats.cli.factory import UsageError, create, json_object
from snn_lats.cli.measure import build_model

PROG = "snn-lats-export"


def shape(text: str) -> tuple[int, ...]:
    """--input-shape: comma-separated positive ints."""
    try:
        dims = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated ints such as 1,3,32,32, got {text!r}") \
            from None
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError("must be at least two positive ints (batch first, or T then "
                                         f"batch), got {text!r}")
    return dims


def positive(kind: type[int] | type[float]):
    """An argparse type: a finite number > 0 of ``kind``."""
    what = "an int >= 1" if kind is int else "a finite number > 0"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def default_shape(checkpoint) -> tuple[int, ...]:
    """(1, C, H, W) of the data set a training checkpoint names, C from its model kwargs."""
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    data = args.get("data") if isinstance(args, dict) else None
    if data not in INPUT_SHAPES:
        raise UsageError("cannot tell the model's input shape: the checkpoint names no known data set; pass "
                         "--input-shape, e.g. 1,3,32,32")
    channels, height, width = INPUT_SHAPES[data]
    kwargs = checkpoint.get("model_kwargs") or {}
    return (1, int(kwargs.get("in_channels", channels)), height, width)


def get_args_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a training checkpoint, or a prepared or squashed state_dict")
    parser.add_argument("--model", default=None,
                        help="PACKAGE.MODULE:FACTORY (or a registry name inside the repository); by default "
                             "the checkpoint's model")
    parser.add_argument("--model-kwargs", type=json_object, default=None,
                        help="JSON object of the model's kwargs")
    parser.add_argument("--input-shape", type=shape, default=None,
                        help="the example input's shape, e.g. 1,3,32,32 (default: the checkpoint's data set)")
    parser.add_argument("--out", type=Path, required=True, help="the NIR file to write")
    parser.add_argument("--figures", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--dt", type=positive(float), default=1e-4,
                        help="time step (s) the neuron time constants are expressed in (default 1e-4)")
    parser.add_argument("--on-unsupported", choices=("error", "warn"), default="error",
                        help="a neuron setting NIR cannot express: refuse (default) or export NIR's model "
                             "with a warning")
    for name, what in (("fan-in", "nonzero synapses into one neuron"),
                       ("fan-out", "nonzero synapses out of one neuron"),
                       ("synapses", "nonzero synapses of one layer"), ("neurons", "neurons of one layer")):
        parser.add_argument(f"--max-{name}", type=positive(int), default=None, help=f"limit on {what}")
    return parser


def export_command(argv: list[str] | None = None, prog: str = PROG):
    """The whole command: parse ``argv``, export, print the figures, write the files; returns the
    deployment report. The user's errors exit with code 2 and one line on stderr (``SystemExit``)."""
    parser = get_args_parser(prog)
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.model is None:
        parser.error("pass --checkpoint (a training checkpoint names its model) or --model")
    try:
        from snn_lats.export import deployment_report, to_nir, write_nir

        checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint is not None else None
        if checkpoint is not None:
            model = build_model(checkpoint, args.model, args.model_kwargs)
        else:
            model = create(args.model, args.model_kwargs or {})
        input_shape = args.input_shape or default_shape(checkpoint or {})
        for path in (args.out, args.figures):
            if path is not None and not path.parent.is_dir():
                raise UsageError(f"folder {str(path.parent)!r} of {str(path)!r} does not exist")
        limits = {"max_fan_in": args.max_fan_in, "max_fan_out": args.max_fan_out,
                  "max_synapses": args.max_synapses, "max_neurons": args.max_neurons}
        # everything is computed before the first file is written
        graph = to_nir(model.eval(), torch.rand(input_shape), dt=args.dt, on_unsupported=args.on_unsupported)
        report = deployment_report(graph, limits)
    except (ValueError, OSError, ImportError) as exc:  # NIRExportError is a ValueError
        what = f"{type(exc).__name__}: " if isinstance(exc, OSError) else ""
        parser.exit(2, f"{parser.prog}: error: {what}{' '.join(str(exc).split())}\n")
    print(report)
    for line in (graph.metadata.get("notes") or "").splitlines():
        print(f"note: {line}")
    write_nir(graph, args.out)
    print(f"wrote {args.out}")
    if args.figures is not None:
        report.to_json(args.figures)
        print(f"wrote {args.figures}")
    return report


def main(argv: list[str] | None = None) -> int:
    """The console script ``snn-lats-export``: 0 on success; the user's errors exit with code 2."""
    export_command(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
