"""Pick the best checkpoint of a trail (LTP's per-epoch hard-masked networks) for an accuracy or sparsity
budget.

    python -m experiments.pick_from_trail runs/ltp/trail --min-sparsity 0.9  # best Acc@1 at >= 90 % sparsity
    python -m experiments.pick_from_trail runs/ltp/trail --min-acc 85        # sparsest at >= 85 % Acc@1
    python -m experiments.pick_from_trail runs/ltp/trail --min-acc 85 --copy-to picked.pth

Prints the trail with the pick marked, and the pick's path on the last line. Exits with status 1 when no
checkpoint meets the budget. The checkpoints hold plain, squashed weights: they load strictly into an
untouched model, built with
``models.create_model(ckpt["model_name"], structure=ckpt["structure"], **ckpt["model_kwargs"])``
(the structure is None unless OCS removed channels), and into ``experiments.benchmark_sparsity``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snn_lats.cli.types import finite_float
from snn_lats.io import atomic_write
from snn_lats.trail import pick, read_trail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trail", help="the trail directory (OUTPUT_DIR/trail of a training run)")
    p.add_argument("--min-acc", type=finite_float, default=None, help="Acc@1 budget, in percent")
    p.add_argument("--min-sparsity", type=finite_float, default=None,
                   help="weight-sparsity budget, a fraction in [0, 1]")
    p.add_argument("--copy-to", default=None, help="copy the picked checkpoint here")
    args = p.parse_args(argv)
    if args.min_acc is None and args.min_sparsity is None:
        p.error("give a budget: --min-acc, --min-sparsity or both")
    if args.min_sparsity is not None and not 0 <= args.min_sparsity <= 1:
        p.error(f"--min-sparsity must be a fraction in [0, 1], got {args.min_sparsity}")
    try:
        entries = read_trail(args.trail)
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))
    chosen = pick(entries, args.min_acc, args.min_sparsity)
    print(f"{'':2}{'epoch':>5}  {'Acc@1':>7}  {'sparsity':>8}  path")
    for e in entries:
        mark = "->" if e is chosen else ""
        print(f"{mark:2}{e.epoch:>5}  {e.acc1:7.2f}  {e.sparsity:8.4f}  {e.path}")
    if chosen is None:
        print("no checkpoint meets the budget", file=sys.stderr)
        return 1
    path = Path(args.trail) / chosen.path
    if args.copy_to:
        if not path.is_file():  # the index names a file that was deleted or never finished
            print(f"pick_from_trail: the trail's index names {path}, which does not exist; nothing copied",
                  file=sys.stderr)
            return 2
        if path.resolve().parent != Path(args.trail).resolve():  # read_trail allows plain names: a link
            print(f"pick_from_trail: {path} links to {path.resolve()}, outside the trail; nothing copied",
                  file=sys.stderr)
            return 2
        try:
            atomic_write(args.copy_to, path.read_bytes())
        except OSError as exc:  # a WriteError naming --copy-to, or the pick unreadable
            print(f"pick_from_trail: {exc.strerror or exc}; nothing copied", file=sys.stderr)
            return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
