"""One training step against a plain eager step computed by hand from ``flow.log_prob``."""

import copy
import math

import pytest
import torch

from gsmflow_nflows import build_gsmflow
from gsmflow_nflows.losses import PrototypeLoss, VisualPerturbation
from gsmflow_nflows.training import train_step
from tests.transform_harness import randomise_parameters

D = 6
LR, WD, WEIGHT, PI = 1e-2, 1e-3, 2.5, 0.1
# 12 rows of 3 distinct classes: the ContextGroups grouping is used (3 <= 0.5 * 12).
LABELS = torch.tensor([0, 2, 2, 1, 0, 0, 2, 1, 1, 0, 2, 0])


def _setup(dtype):
    classes = torch.rand(5, 4, dtype=dtype) + 0.1
    flow = build_gsmflow(
        D, classes, num_blocks=2, hidden_features=8, semantic_features=4,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    randomise_parameters(flow, scale=0.3)  # away from the near-identity init
    features = torch.randn(len(LABELS), D, dtype=dtype)
    seen, seen_means = classes[:3], torch.randn(3, D, dtype=dtype)
    return flow, classes, features, seen, seen_means


def _hand_step(flow, classes, features, seen, seen_means, eps=None):
    """The step written out: nflows log_prob, prototype at z = 0, one Adam step."""
    flow._embedding_net.groups.max_fraction = 0.0  # plain eager computation, no grouping
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR, weight_decay=WD)
    inputs = features if eps is None else features + PI * eps
    log_prob = flow.log_prob(inputs, context=classes[LABELS])
    nll = -log_prob.mean() / D - 0.5 * math.log(2 * math.pi)
    with torch.no_grad():
        h = flow._embedding_net(seen)
    prototypes, _ = flow._transform.inverse(torch.zeros_like(seen_means), context=h)
    prototype = WEIGHT * ((prototypes - seen_means) ** 2).mean()
    loss = nll + prototype
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"nll": nll.detach(), "prototype": prototype.detach(), "loss": loss.detach()}


@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"]
)
@pytest.mark.parametrize("perturb", [False, True], ids=["plain", "perturbed"])
def test_step_equals_hand_computed_eager_step(dtype, tol, perturb):
    flow, classes, features, seen, seen_means = _setup(dtype)
    reference = copy.deepcopy(flow)
    before = [p.detach().clone() for p in flow.parameters()]
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR, weight_decay=WD)
    losses = train_step(
        flow,
        optimizer,
        features,
        classes[LABELS],
        seen_embeddings=seen,
        seen_means=seen_means,
        perturbation=VisualPerturbation(PI) if perturb else None,
        prototype=PrototypeLoss(WEIGHT),
        generator=torch.Generator().manual_seed(11),
    )
    eps = None
    if perturb:  # x + pi * eps, eps ~ N(0, I) from the same generator
        eps = torch.randn(features.shape, generator=torch.Generator().manual_seed(11), dtype=dtype)
    expected = _hand_step(reference, classes, features, seen, seen_means, eps)

    assert expected["prototype"] > 1e-3 and abs(expected["nll"]) > 1e-3  # both terms matter
    for name in ("nll", "prototype", "loss"):
        torch.testing.assert_close(losses[name], expected[name], rtol=tol, atol=tol)
    params, ref_params = list(flow.parameters()), list(reference.parameters())
    assert len(params) == len(ref_params)
    for got, want, old in zip(params, ref_params, before, strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        assert not torch.equal(got, old)  # every parameter was updated


def test_prototype_gradient_does_not_reach_the_encoder():
    flow, classes, features, seen, seen_means = _setup(torch.float64)
    optimizer = torch.optim.SGD(flow.parameters(), lr=0.0)
    train_step(flow, optimizer, features, classes[LABELS], seen_embeddings=seen,
               seen_means=seen_means, prototype=PrototypeLoss(WEIGHT))  # fmt: skip
    nll_only = copy.deepcopy(flow)
    # The encoder's gradient comes from the NLL alone; the flow's includes the prototype.
    optimizer_b = torch.optim.SGD(nll_only.parameters(), lr=0.0)
    train_step(nll_only, optimizer_b, features, classes[LABELS], seen_embeddings=seen,
               seen_means=seen_means, prototype=None)  # fmt: skip
    encoder, encoder_b = flow._embedding_net, nll_only._embedding_net
    for p, q in zip(encoder.parameters(), encoder_b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)
    transform_grads = [
        (p.grad, q.grad)
        for p, q in zip(flow._transform.parameters(), nll_only._transform.parameters(), strict=True)
    ]
    assert any(not torch.allclose(a, b) for a, b in transform_grads)


def test_grouping_gives_the_same_step_as_no_grouping():
    flow, classes, features, seen, seen_means = _setup(torch.float64)
    ungrouped = copy.deepcopy(flow)
    ungrouped._embedding_net.groups.max_fraction = 0.0
    groups = flow._embedding_net.groups
    grouped_calls = []
    original = groups._group

    def spy(context):
        result = original(context)
        grouped_calls.append(result is not None)
        return result

    groups._group = spy
    results = []
    for model in (flow, ungrouped):
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WD)
        results.append(
            train_step(
                model,
                optimizer,
                features,
                classes[LABELS],
                seen_embeddings=seen,
                seen_means=seen_means,
                perturbation=VisualPerturbation(PI),
                prototype=PrototypeLoss(WEIGHT),
                generator=torch.Generator().manual_seed(5),
            )
        )
    assert any(grouped_calls)  # the grouped path really ran
    for name in ("nll", "prototype", "loss"):
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-12, atol=1e-12)
    for p, q in zip(flow.parameters(), ungrouped.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_bf16_step_losses_close_to_fp32():
    flow, classes, features, seen, seen_means = _setup(torch.float32)
    twin = copy.deepcopy(flow)
    losses = {}
    for precision, model in (("fp32", flow), ("bf16", twin)):
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        losses[precision] = train_step(
            model, optimizer, features, classes[LABELS], seen_embeddings=seen,
            seen_means=seen_means, prototype=PrototypeLoss(WEIGHT), precision=precision,
        )  # fmt: skip
    for name in ("nll", "prototype", "loss"):
        assert losses["bf16"][name].dtype == torch.float32
        torch.testing.assert_close(losses["bf16"][name], losses["fp32"][name], rtol=0.03, atol=0.05)
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        train_step(flow, optimizer, features, classes[LABELS], seen_embeddings=seen,
                   seen_means=seen_means, precision="fp8")  # fmt: skip
