"""The data sets of the experiments, in one vocabulary: ``--data NAME [--data-path DIR]``.

The loaders, transforms and the vocabulary live in the package (``snn_lats.cli.data``), so the installed
``snn-lats-measure`` measures on the same validation split as experiments.train evaluates on; this module is
what the experiments import them from. See snn_lats/cli/data.py for the data sets and their flags.
"""
from snn_lats.cli.data import (
    DATASETS,
    EXTRA,
    FASHION_MNIST_DIR,
    INPUT_SHAPES,
    PATHLESS,
    MissingExtraError,
    _load,
    _new_spelling,
    build_datasets,
    check_name,
    data_flags,
    digits,
    eval_split,
    fashion_mnist,
)

__all__ = [
    "DATASETS", "EXTRA", "FASHION_MNIST_DIR", "INPUT_SHAPES", "PATHLESS", "MissingExtraError", "_load",
    "_new_spelling", "build_datasets", "check_name", "data_flags", "digits", "eval_split", "fashion_mnist",
]
