"""The finiteness check: its fast path (a finite sum) hides no bad entry, refuses no good one."""

import pytest
import torch

from gsmflow_nflows._checks import check_finite


@pytest.mark.parametrize(
    "bad",
    [[float("nan")], [float("inf")], [-float("inf")], [float("inf"), -float("inf")],
     [float("nan"), float("inf")]],
    ids=["nan", "inf", "-inf", "inf-inf", "nan+inf"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_every_kind_of_bad_entry_is_caught_and_counted(bad, dtype):
    values = torch.ones(50, 4, dtype=dtype)
    values.view(-1)[[7, 23][: len(bad)]] = torch.tensor(bad, dtype=dtype)
    with pytest.raises(ValueError, match=f"x holds {len(bad)} non-finite"):
        check_finite("x", values)


def test_finite_entries_whose_sum_overflows_pass():
    values = torch.full((4, 3), 3e38)  # float32: the sum is inf, every entry finite
    assert not torch.isfinite(values.sum())
    check_finite("x", values)
    check_finite("x", torch.empty(0, 3))
