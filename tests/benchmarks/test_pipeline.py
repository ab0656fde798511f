"""benchmarks/pipeline.py: its projection is each stage's time per unit x the run's units."""

import pytest

from benchmarks.pipeline import main
from gsmflow_nflows.training import preset_config
from tests.tiny_gzsl import load_tiny, make_tiny


def test_projection_adds_up_and_counts_the_runs_units(tmp_path):
    root = make_tiny(tmp_path)
    report = main(["--dataset", "TINY", "--data-root", str(root), "--preset", "paper",
                   "--iterations", "3", "--relation-epochs", "1", "--json",
                   str(tmp_path / "out.json")])  # fmt: skip
    config = preset_config("TINY", load_tiny(root), "paper")
    stages = {s["stage"]: s for s in report["stages"]}
    total = config.training.iterations(40)  # tiny: 4 seen classes x 10 training images
    assert report["flow_iterations"] == stages["flow"]["full_units"] == total
    assert stages["flow"]["timed_units"] == 3
    assert stages["relation"]["full_units"] == config.mining.relation_epochs
    assert stages["mining"]["full_units"] == config.mining.loops
    for stage in report["stages"]:
        per_unit = stage["timed_seconds"] / stage["timed_units"]
        assert stage["projected_seconds"] == pytest.approx(per_unit * stage["full_units"])
    counted = [s for s in report["stages"] if s["stage"] != "flow (frozen)"]
    assert report["projected_seconds"] == pytest.approx(
        sum(s["projected_seconds"] for s in counted)
    )
    assert sum(s["share"] for s in counted) == pytest.approx(1.0)
    assert (tmp_path / "out.json").is_file()
