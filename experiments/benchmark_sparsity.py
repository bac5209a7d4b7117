"""Spike-level sparsity of a (pruned) model: weight sparsity, firing rates, exact SOPs, MACs and energy.

    python -m experiments.benchmark_sparsity --checkpoint runs/demo/checkpoint_best.pth --data digits \\
        --out runs/sparsity
    python -m experiments.benchmark_sparsity --model sew_resnet18 --model-kwargs '{"T": 4}' \\
        --checkpoint ckpt.pth --data imagenet --data-path /data/imagenet --max-batches 50

The repository's name for the package's console script ``snn-lats-measure`` (snn_lats/cli/measure.py, which
documents the flags): the same command, with the registry's models (``models``) by name. This module keeps the
names its callers and tests import; its ``main`` returns the MetricsReport.
"""
from __future__ import annotations

import argparse

from snn_lats.cli.data import DATASETS, eval_split
from snn_lats.cli.factory import UsageError, create, json_object, registry, resolve_factory
from snn_lats.cli.measure import build_model, measure_command, plot, run, unpruned_architecture
from snn_lats.cli.measure import get_args_parser as _get_args_parser
from snn_lats.metrics import MetricsReport

PROG = "python -m experiments.benchmark_sparsity"

__all__ = [
    "DATASETS", "PROG", "UsageError", "build_model", "create", "eval_split", "get_args_parser", "json_object",
    "main", "plot", "registry", "resolve_factory", "run", "unpruned_architecture",
]


def get_args_parser() -> argparse.ArgumentParser:
    return _get_args_parser(PROG)


def main(argv: list[str] | None = None) -> MetricsReport:
    return measure_command(argv, prog=PROG)


if __name__ == "__main__":
    main()
