"""The model factory and feature generation, against independent computations."""

import math

import pytest
import torch
from nflows.flows.base import Flow
from nflows.transforms.lu import LULinear
from nflows.transforms.permutations import Permutation

from gsmflow_nflows import (
    RelativePositioningEncoder,
    SemanticAffineCouplingTransform,
    SemanticCouplingNet,
    build_gsmflow,
    generate_features,
)
from tests.transform_harness import (
    check_transform,
    jacobian_logdet,
    randomise_parameters,
    save_and_load,
)

SMALL = dict(num_blocks=2, hidden_features=8, semantic_features=4)


@pytest.fixture
def classes():
    return torch.randn(6, 3, dtype=torch.float64).abs() + 0.1


@pytest.mark.parametrize("permutation", [None, "reverse", "random", "lu"])
def test_flow_transform_harness(permutation, classes):
    flow = build_gsmflow(5, classes, permutation=permutation, **SMALL)
    mixing = [m for m in flow._transform.modules() if isinstance(m, (Permutation, LULinear))]
    assert len(mixing) == (0 if permutation is None else SMALL["num_blocks"] - 1)
    check_transform(
        lambda: build_gsmflow(5, classes, permutation=permutation, **SMALL)._transform,
        5,
        context_features=SMALL["semantic_features"],
    )


@pytest.mark.parametrize("used_by", ["log_prob", "generate_features"])
@pytest.mark.parametrize("conditioning", ["couplings", "mean"])
def test_whole_flow_torch_save_after_use(classes, conditioning, used_by):
    fitted = {}
    if conditioning == "mean":  # a non-trivial shift, with two known classes
        generator = torch.Generator().manual_seed(4)
        fitted = dict(
            semantic_mean=(
                torch.randn(3, 5, generator=generator),
                torch.randn(5, generator=generator),
            ),
            known_means=(classes[:2], torch.randn(2, 5, generator=generator)),
            semantic_scale=torch.rand(5, generator=generator) + 0.5,
        )
    flow = build_gsmflow(5, classes, conditioning=conditioning, **SMALL, **fitted)
    randomise_parameters(flow, scale=0.3)
    x = torch.randn(8, 5, dtype=torch.float64)
    a = classes[torch.tensor([0, 0, 3, 3, 0, 5, 3, 0])]  # repeated classes: grouped
    if used_by == "log_prob":
        flow.log_prob(x, context=a)
    else:
        generate_features(flow, classes[:2], 3)

    loaded = save_and_load(flow)
    sharing = [m.groups for m in loaded.modules() if hasattr(m, "groups")]
    if conditioning == "couplings":  # the encoder and every net still share one grouping
        assert len(sharing) == 1 + 2 * SMALL["num_blocks"]
        assert all(groups is sharing[0] for groups in sharing)
    torch.testing.assert_close(
        loaded.log_prob(x, context=a), flow.log_prob(x, context=a), rtol=0, atol=0
    )
    samples = [
        generate_features(model, classes[[4, 1]], 4, generator=torch.Generator().manual_seed(2))
        for model in (flow, loaded)
    ]
    torch.testing.assert_close(samples[1], samples[0], rtol=0, atol=0)


def test_log_prob_equals_base_plus_jacobian_logdet(classes):
    flow = build_gsmflow(4, classes, **SMALL)
    randomise_parameters(flow)
    x = torch.randn(5, 4, dtype=torch.float64)
    a = classes[torch.tensor([0, 0, 3, 5, 3])]
    context = flow._embedding_net(a)
    noise, _ = flow._transform(x, context=context)
    base = -0.5 * noise.square().sum(1) - 0.5 * 4 * math.log(2 * math.pi)
    expected = base + jacobian_logdet(flow._transform, x, context)
    torch.testing.assert_close(flow.log_prob(x, context=a), expected, rtol=1e-9, atol=1e-9)


def test_grouping_changes_neither_log_prob_nor_any_gradient(classes):
    flow = build_gsmflow(6, classes, **SMALL)
    randomise_parameters(flow, scale=0.3)
    labels = torch.tensor([0, 1, 1, 0, 2, 2, 0, 1, 0, 0])
    x, a = torch.randn(10, 6, dtype=torch.float64), classes[labels]

    def value_and_grads():
        loss = -flow.log_prob(x, context=a).mean()
        return loss, torch.autograd.grad(loss, list(flow.parameters()))

    assert flow._embedding_net.groups(a) is not None  # the batch is grouped by default
    loss, grads = value_and_grads()
    flow._embedding_net.groups.max_fraction = 0.0  # switch grouping off
    plain_loss, plain_grads = value_and_grads()
    torch.testing.assert_close(loss, plain_loss, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_gradients_reach_the_encoder(classes):
    flow = build_gsmflow(4, classes, **SMALL)
    a = classes[torch.tensor([0, 1, 2, 1])]
    flow.log_prob(torch.randn(4, 4, dtype=torch.float64), context=a).sum().backward()
    for layer in flow._embedding_net.anchor_layers:
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_structure_init_device_and_dtype(classes):
    flow = build_gsmflow(7, classes, **SMALL)
    assert isinstance(flow, Flow)
    assert isinstance(flow._embedding_net, RelativePositioningEncoder)
    nets = [m for m in flow.modules() if isinstance(m, SemanticCouplingNet)]
    assert len(nets) == 2 * SMALL["num_blocks"]
    assert {n.in_features for n in nets} == {3, 4}  # odd D: halves of 3 and 4
    flat = torch.cat([p.flatten() for n in nets for p in n.parameters()])
    assert flat.dtype == torch.float64
    assert 0.008 < flat.std().item() < 0.012  # 0.01 * N(0, 1), as the reference
    x = torch.randn(3, 7, dtype=torch.float64)
    z = flow.transform_to_noise(x, context=classes[:3])
    assert (z - x).abs().max() < 0.2  # starts near the identity


def test_deterministic_with_generator(classes):
    one = build_gsmflow(4, classes, generator=torch.Generator().manual_seed(5), **SMALL)
    two = build_gsmflow(4, classes, generator=torch.Generator().manual_seed(5), **SMALL)
    for p, q in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("conditioning", ["couplings", "mean"])
@pytest.mark.parametrize("permutation", [None, "random", "lu"])
def test_a_generator_leaves_the_global_rng_alone(classes, permutation, conditioning):
    torch.manual_seed(21)
    state = torch.get_rng_state()
    options = dict(permutation=permutation, conditioning=conditioning, **SMALL)
    build_gsmflow(4, classes, generator=torch.Generator().manual_seed(5), **options)
    assert torch.equal(torch.get_rng_state(), state)
    # Without a generator the global RNG is the source: the same global seed, the same flow.
    torch.manual_seed(5)
    one = build_gsmflow(4, classes, **options)
    torch.manual_seed(5)
    two = build_gsmflow(4, classes, **options)
    for p, q in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(p, q)


def test_flow_sample_and_log_prob_with_nflows_api(classes):
    flow = build_gsmflow(4, classes, **SMALL)
    samples = flow.sample(3, context=classes[:2])
    assert samples.shape == (2, 3, 4)
    log_prob = flow.log_prob(samples.reshape(6, 4), context=classes[:2].repeat_interleave(3, 0))
    assert torch.isfinite(log_prob).all()


def test_generate_features_inverts_the_flow(classes):
    flow = build_gsmflow(5, classes, **SMALL)
    randomise_parameters(flow, scale=0.3)
    features, labels = generate_features(
        flow, classes[[4, 1]], 7, batch_size=3, generator=torch.Generator().manual_seed(9)
    )
    assert features.shape == (14, 5) and labels.tolist() == [0] * 7 + [1] * 7
    # Reproduce the noise: the same generator, the same batches (3, 3, 1 rows per class).
    generator = torch.Generator().manual_seed(9)
    noise = torch.cat(
        [torch.randn(r, 5, generator=generator, dtype=torch.float64) for r in (3, 3, 1) * 2]
    )
    recovered = flow.transform_to_noise(features, context=classes[[4, 1]][labels])
    torch.testing.assert_close(recovered, noise, rtol=1e-9, atol=1e-9)


def test_generate_features_follows_model_dtype():
    classes = torch.rand(4, 3) + 0.1
    flow = build_gsmflow(4, classes, **SMALL)
    features, labels = generate_features(flow, classes.double(), 2)
    assert features.dtype == torch.float32 and labels.dtype == torch.long


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_blocks=0), "num_blocks"),
        (dict(hidden_features=-1), "hidden_features"),
        (dict(permutation="shuffle"), "permutation"),
    ],
)
def test_impossible_hyperparameters(classes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_gsmflow(4, classes, **{**SMALL, **kwargs})


def test_non_integer_size_is_a_type_error(classes):
    with pytest.raises(TypeError, match="semantic_features to be an integer"):
        build_gsmflow(4, classes, **{**SMALL, "semantic_features": 2.5})


def test_bad_feature_count_and_classes(classes):
    with pytest.raises(ValueError, match="features >= 2"):
        build_gsmflow(1, classes, **SMALL)
    with pytest.raises(ValueError, match="at least 3 classes"):
        build_gsmflow(4, classes[:2], **SMALL)
    flow = build_gsmflow(4, classes, **SMALL)
    with pytest.raises(ValueError, match=r"shape \[batch, 4\], got \[2, 5\]"):
        flow.log_prob(torch.randn(2, 5, dtype=torch.float64), context=classes[:2])
    with pytest.raises(ValueError, match="3 features, got 2"):
        flow.log_prob(torch.randn(2, 4, dtype=torch.float64), context=classes[:2, :2])


def test_generate_features_errors(classes):
    flow = build_gsmflow(4, classes, **SMALL)
    with pytest.raises(ValueError, match="num_per_class"):
        generate_features(flow, classes, 0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_features(flow, classes, 3, batch_size=0)
    with pytest.raises(ValueError, match="3 features, got 2"):
        generate_features(flow, classes[:, :2], 3)


def test_values_checked_where_data_and_noise_enter(classes):
    flow = build_gsmflow(4, classes, num_blocks=3, hidden_features=8, semantic_features=4)
    couplings = [m for m in flow.modules() if isinstance(m, SemanticAffineCouplingTransform)]
    assert [c.check_values for c in couplings] == [True] + [False] * 4 + [True]
    bad = torch.randn(2, 4, dtype=torch.float64)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="inputs holds 1 non-finite"):
        flow.log_prob(bad, context=classes[:2])
    with pytest.raises(ValueError, match="inputs holds 1 non-finite"):
        flow._transform.inverse(bad, context=flow._embedding_net(classes[:2]))
    bad_classes = classes[:2].clone()
    bad_classes[1, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        flow.log_prob(torch.randn(2, 4, dtype=torch.float64), context=bad_classes)


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    classes = torch.rand(5, 3) + 0.1
    flow = build_gsmflow(6, classes, num_blocks=2, hidden_features=32, semantic_features=8)
    randomise_parameters(flow, scale=0.1)
    x, a = torch.rand(16, 6), classes[torch.randint(0, 5, (16,))]
    exact = flow.log_prob(x, context=a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = flow.log_prob(x, context=a)
        features, _ = generate_features(flow, classes[:2], 4, generator=torch.Generator())
    assert torch.isfinite(features).all()
    torch.testing.assert_close(approx.float(), exact, rtol=0.05, atol=0.2)
    # generated under bf16, stored in the flow's float32, near the float32 samples of the same z
    reference, _ = generate_features(flow, classes[:2], 4, generator=torch.Generator())
    assert features.dtype == torch.float32 and not torch.equal(features, reference)
    torch.testing.assert_close(features, reference, rtol=0.05, atol=0.05)
