"""Accuracy benchmark: ``gsmflow bench`` over datasets, presets and seeds, as a Markdown table.

Each cell is mean ± std over seeds of per-class top-1 accuracy (%), under the
protocol named in its row. Numbers on ``synthetic`` are on generated features,
not a real benchmark; real datasets need their ResNet-101 features in
``--data-root`` (``gsmflow download NAME``).

    python benchmarks/accuracy.py --datasets synthetic --presets quick --seeds 3
    python benchmarks/accuracy.py --datasets apy,cub --presets paper \
        --protocols final,val,paper --data-root ~/data/xlsa17 --output results.md
    python benchmarks/accuracy.py --from-json a.json b.json  # tabulate `bench --output` files
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from gsmflow_nflows.experiment import BenchRequest, run_bench, seeds_from
from gsmflow_nflows.results_table import markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="synthetic")
    parser.add_argument("--presets", default="quick")
    parser.add_argument("--protocols", default="final")
    parser.add_argument(
        "--ablations", default="", help="';'-separated ablation sets, e.g. 'mining;prototype'"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="tabulate existing `gsmflow bench --output` files instead of running",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        print(markdown([json.loads(path.read_text()) for path in args.from_json]))
        return 0

    ablation_sets = [()] + [tuple(a.split(",")) for a in args.ablations.split(";") if a]
    results = []
    for dataset in args.datasets.split(","):
        for preset in args.presets.split(","):
            for protocol in args.protocols.split(","):
                for ablate in ablation_sets:
                    request = BenchRequest(
                        dataset=dataset,
                        data_root=args.data_root,
                        preset=preset,
                        protocol=protocol,
                        seeds=seeds_from(args.seed, args.seeds),
                        device=args.device,
                        ablate=ablate,
                    )
                    print(f"running {dataset} {preset} {protocol} {ablate or ''}", file=sys.stderr)
                    results.append(run_bench(request).to_dict())
                    print(markdown(results[-1:]).splitlines()[-1], file=sys.stderr)
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    table = markdown(results) + f"\n\nMachine: {machine}.\n"
    print(table)
    if args.output:
        args.output.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
