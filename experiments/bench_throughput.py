"""Training throughput (img/s) of SEW ResNet-18 (T=4, 224x224), dense against pruned, and the data-loader
bound.

    python -m experiments.bench_throughput                     # CPU
    python -m experiments.bench_throughput --device cuda --batch-size 64 --workers 16

The model rate times full training steps (forward, backward, SGD step, pruner step, reset_net) on a fixed
batch, dense and pruned interleaved, like bench_overhead. The loader rate runs the ImageNet training input
pipeline (JPEG decode, RandomResizedCrop(224), flip, normalise, collate) over synthetic 500x375 JPEGs,
ImageNet's typical size, with --workers processes and no model: the rate the data can be fed at. Training runs
at the lower of the two.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from experiments.bench_overhead import CONFIGS, bench
from experiments.timing import device_from_args


def loader_rate(batch_size: int, workers: int, images: int = 256) -> float:
    import numpy as np
    import torchvision.transforms as T
    from PIL import Image
    from torchvision import datasets

    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        for i in range(images):
            folder = Path(root) / f"class{i % 8}"
            folder.mkdir(exist_ok=True)
            noise = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(noise).save(folder / f"{i}.jpg", quality=90)
        tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        loader = DataLoader(datasets.ImageFolder(root, tf), batch_size=batch_size, shuffle=True,
                            num_workers=workers, persistent_workers=workers > 0)
        for _ in loader:  # warm-up: start the workers, fill the page cache
            pass
        start, seen = time.perf_counter(), 0
        for _ in range(2):
            for x, _ in loader:
                seen += len(x)
        return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    if args.batch_size <= 0 or args.repeats <= 0 or args.workers < 0:
        parser.error("--batch-size and --repeats must be > 0, --workers >= 0")
    device = device_from_args(parser, args.device)
    name, kwargs, shape, _, ignored = CONFIGS["sew18-imagenet-224px"]
    CONFIGS["sew18-imagenet-224px"] = (name, kwargs, shape, args.batch_size, ignored)
    row = bench("sew18-imagenet-224px", device, args.repeats, warmup=1)
    dense, pruned = 1e3 * args.batch_size / row["dense_ms"], 1e3 * args.batch_size / row["pruned_ms"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"SEW ResNet-18, T=4, 224x224, batch {args.batch_size}: dense {dense:.2f} img/s, "
          f"pruned {pruned:.2f} img/s (ratio {row['ratio']:.3f}, A/A {row['control_ratio']:.3f})")
    rate = loader_rate(args.batch_size, args.workers)
    print(f"data loader (ImageNet train transforms, {args.workers} workers): {rate:.0f} img/s "
          f"-> training is {'model' if rate > max(dense, pruned) else 'data'}-bound here")


if __name__ == "__main__":
    main()
