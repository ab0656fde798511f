import pytest
import torch

from gsmflow_nflows.losses import VisualPerturbation


def test_statistics():
    x = torch.linspace(-1, 1, 8).repeat(4000, 1)
    out = VisualPerturbation(pi=0.2)(x, generator=torch.Generator().manual_seed(0))
    noise = out - x
    assert noise.mean().abs() < 0.01
    assert noise.std().item() == pytest.approx(0.2, rel=0.03)
    # the noise is independent of x: per-column std also ~ pi
    torch.testing.assert_close(noise.std(0), torch.full((8,), 0.2), atol=0.01, rtol=0)


def test_dropout_mask_is_shared_over_the_batch(generator):
    x = torch.randn(5, 2000)
    out = VisualPerturbation(pi=0.5, dropout=0.3)(x, generator=generator)
    unchanged = out == x
    dropped = unchanged.all(0)
    assert torch.equal(unchanged.any(0), dropped)  # a column is all-or-nothing
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.04)
    assert torch.equal(out[:, dropped], x[:, dropped])


def test_pi_zero_is_identity(generator):
    x = torch.randn(3, 4)
    assert torch.equal(VisualPerturbation(pi=0.0, dropout=0.5)(x, generator=generator), x)


def test_deterministic_with_generator():
    x = torch.randn(3, 4)
    perturb = VisualPerturbation(pi=0.1, dropout=0.2)
    a = perturb(x, generator=torch.Generator().manual_seed(7))
    b = perturb(x, generator=torch.Generator().manual_seed(7))
    c = perturb(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dtype_follows_input(generator):
    x = torch.zeros(2, 3, dtype=torch.float64)
    assert VisualPerturbation(pi=0.1)(x, generator=generator).dtype == torch.float64


@pytest.mark.parametrize(
    ("pi", "dropout", "error"),
    [
        (-0.1, 0.0, ValueError),
        (float("nan"), 0.0, ValueError),
        (0.1, 1.0, ValueError),
        (0.1, -0.1, ValueError),
        ("0.1", 0.0, TypeError),
    ],
)
def test_rejects_bad_hyperparameters(pi, dropout, error):
    with pytest.raises(error):
        VisualPerturbation(pi=pi, dropout=dropout)


def test_rejects_bad_input():
    perturb = VisualPerturbation(pi=0.1)
    with pytest.raises(ValueError, match="shape"):
        perturb(torch.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        perturb(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="Generator"):
        perturb(torch.zeros(3, 2), generator=0)
