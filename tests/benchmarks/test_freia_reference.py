"""The FrEIA reference of benchmarks/speed.py computes our model, given our weights.

This is the "identical weights" proof behind the speed comparison: with the
weights mapped by ``map_weights``, the reference and ``build_gsmflow`` give the
same z, log-det, NLL, inverse and gradients in float64.
"""

import pytest
import torch

pytest.importorskip("FrEIA")

from benchmarks.freia_reference import (  # noqa: E402
    ReferenceGSMFlow,
    choose_anchor_indices,
    map_weights,
    reference_generate,
    reference_nll,
)
from gsmflow_nflows import build_gsmflow, generate_features  # noqa: E402

FEATURES, ATTRIBUTES, CLASSES, BLOCKS, HIDDEN, SEMANTIC = 10, 5, 7, 3, 12, 6
TOL = 1e-5


def _models(generator, features=FEATURES, **kwargs):
    classes = torch.nn.functional.normalize(
        torch.rand(CLASSES, ATTRIBUTES, generator=generator, dtype=torch.float64), dim=1
    )
    flow = build_gsmflow(
        features,
        classes,
        num_blocks=BLOCKS,
        hidden_features=HIDDEN,
        semantic_features=SEMANTIC,
        generator=generator,
        **kwargs,
    )
    with torch.no_grad():  # far from the near-identity init, so the check can fail
        for p in flow.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    reference = ReferenceGSMFlow(
        features,
        classes,
        num_blocks=BLOCKS,
        hidden_features=HIDDEN,
        semantic_features=SEMANTIC,
    ).double()
    return flow, reference, classes


def _batch(generator, classes, size=9):
    labels = torch.randint(3, (size,), generator=generator)  # repeated classes
    x = torch.rand(size, FEATURES, generator=generator, dtype=torch.float64)
    return x, classes[labels]


def test_same_anchors(generator):
    flow, reference, classes = _models(generator)
    assert torch.equal(flow._embedding_net.anchors, classes[choose_anchor_indices(classes)])
    assert torch.equal(reference.encoder.anchors, flow._embedding_net.anchors)


@pytest.mark.parametrize("features", [FEATURES, 9])
def test_mapped_weights_give_same_forward(generator, features):
    flow, reference, classes = _models(generator, features=features)
    assert map_weights(flow, reference) == []
    labels = torch.randint(3, (9,), generator=generator)
    x = torch.rand(9, features, generator=generator, dtype=torch.float64)
    a = classes[labels]
    with torch.no_grad():
        z_ours, logdet_ours = flow._transform(x, context=flow._embedding_net(a))
        z_ref, logdet_ref = reference(x, a)
    assert logdet_ref.abs().max() > 0.1  # weights are not near the identity
    torch.testing.assert_close(z_ours, z_ref, rtol=0, atol=TOL)
    torch.testing.assert_close(logdet_ours, logdet_ref, rtol=0, atol=TOL)
    nll_ref = reference_nll(z_ref, logdet_ref)
    nll_ours = -flow.log_prob(x, context=a).mean() / features
    # log_prob adds the Gaussian constant D/2 log(2 pi), which the reference NLL drops
    constant = 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    torch.testing.assert_close(nll_ours - constant, nll_ref, rtol=0, atol=TOL)


def test_mapped_weights_give_same_inverse_and_samples(generator):
    flow, reference, classes = _models(generator)
    map_weights(flow, reference)
    noise = torch.randn(CLASSES, FEATURES, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        x_ours, _ = flow._transform.inverse(noise, context=flow._embedding_net(classes))
        x_ref = reference.inverse_with_context(noise, reference.encoder(classes))
    torch.testing.assert_close(x_ours, x_ref, rtol=0, atol=TOL)
    ours, labels_ours = generate_features(
        flow, classes[:2], 4, generator=torch.Generator().manual_seed(3)
    )
    theirs, labels_ref = reference_generate(
        reference, classes[:2], 4, batch_size=4, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL)
    assert torch.equal(labels_ours, labels_ref)


def test_mapped_weights_give_same_gradients(generator):
    flow, reference, classes = _models(generator)
    map_weights(flow, reference)
    x, a = _batch(generator, classes)
    means = torch.rand(3, FEATURES, generator=generator, dtype=torch.float64)

    def loss(z, logdet, prototypes):
        return reference_nll(z, logdet) + 3.0 * torch.nn.functional.mse_loss(prototypes, means)

    z, logdet = flow._transform(x, context=flow._embedding_net(a))
    with torch.no_grad():
        seen = flow._embedding_net(classes[:3])
    prototypes, _ = flow._transform.inverse(torch.zeros_like(means), context=seen)
    loss(z, logdet, prototypes).backward()

    z, logdet = reference(x, a)
    with torch.no_grad():
        seen = reference.encoder(classes[:3])
    loss(z, logdet, reference.inverse_with_context(torch.zeros_like(means), seen)).backward()

    couplings = [m for m in flow._transform.modules() if hasattr(m, "transform_net")]
    for k, block in enumerate(reference.inn):
        for net, subnet in (
            (couplings[2 * k].transform_net, block.subnet2),
            (couplings[2 * k + 1].transform_net, block.subnet1),
        ):
            first = torch.cat([net.input_layer.weight.grad, net.context_layer.weight.grad], 1)
            torch.testing.assert_close(first, subnet[0].weight.grad, rtol=0, atol=TOL)
            torch.testing.assert_close(
                net.output_layer.weight.grad, subnet[2].weight.grad, rtol=0, atol=TOL
            )
    for ours, theirs in zip(
        flow._embedding_net.anchor_layers, reference.encoder.layers, strict=True
    ):
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=0, atol=TOL)


def test_permuted_flow_is_refused(generator):
    flow, reference, _ = _models(generator, permutation="reverse")
    with pytest.raises(ValueError, match="lacks"):
        map_weights(flow, reference)
