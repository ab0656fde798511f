"""How much the GZSL numbers move with the draw of the generated features, by ``oversample``.

The linear-Gaussian generator (ridge means, pooled per-dimension noise) is
drawn ``--draws`` times for each value of ``evaluation.oversample`` (features
drawn per generated sample, each weighing ``1 / oversample`` in the
classifier); the classifier is the ``default`` preset's, scored on the test
split (protocol ``final``: last epoch). Everything else is fixed, so the
spread is the Monte-Carlo noise of the generated set alone.

    python benchmarks/oversampling.py                       # digits (real, offline)
    python benchmarks/oversampling.py --dataset HAR_1 --data-root ../data/realdev
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.evaluation.baselines import linear_gaussian_baseline
from gsmflow_nflows.training.presets import preset_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--oversample", default="1,3,10,rule", help="values; 'rule': the preset's")
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, data_root=args.data_root)
    evaluation = preset_config(args.dataset, data, "default").evaluation
    print(
        f"{data.name}: {data.num_train} training features, D={data.feature_dim}, "
        f"{data.num_seen} seen / {data.num_unseen} unseen classes; linear-Gaussian generator, "
        f"default preset classifier, {evaluation.samples_per_class} samples per unseen class, "
        f"test split, {args.draws} draws (seeds 0..{args.draws - 1})"
    )
    header = ("oversample", "draws/class", "H mean", "H std", "T1 mean", "s/draw")
    print(" ".join(f"{name:>{len(name) + 1}}" for name in header))
    for value in args.oversample.split(","):
        k = evaluation.oversample if value == "rule" else int(value)
        settings = dataclasses.replace(evaluation, oversample=k)
        started = time.perf_counter()
        scores = [
            linear_gaussian_baseline(data, settings, generator=torch.Generator().manual_seed(s))
            for s in range(args.draws)
        ]
        seconds = (time.perf_counter() - started) / args.draws
        h = [100 * score.H for score in scores]
        t1 = [100 * score.T1 for score in scores]
        label = f"{k} (rule)" if value == "rule" else str(k)
        print(
            f"{label:>11} {settings.generated_per_class():>12} {statistics.mean(h):>7.1f} "
            f"{statistics.pstdev(h):>6.1f} {statistics.mean(t1):>8.1f} {seconds:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
