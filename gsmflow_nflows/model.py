"""The paper's model in one call, and feature generation for unseen classes.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.lu import LULinear
from nflows.transforms.permutations import Permutation, ReversePermutation
from torch import Tensor, nn

from gsmflow_nflows._checks import check_int, check_matrix
from gsmflow_nflows.context_groups import ContextGroups
from gsmflow_nflows.runtime import keep_global_rng, reset_linear
from gsmflow_nflows.semantic import RelativePositioningEncoder
from gsmflow_nflows.semantic_mean import SemanticShiftTransform
from gsmflow_nflows.transforms import SemanticAffineCouplingTransform, SemanticCouplingNet

PERMUTATIONS = (None, "reverse", "random", "lu")
#: How the class vector enters the flow: the paper's couplings, or a linear mean only.
CONDITIONINGS = ("couplings", "mean")


def glow_block(
    features: int,
    context_features: int,
    hidden_features: int,
    clamp: float = 1.0,
    groups: ContextGroups | None = None,
) -> CompositeTransform:
    """One GLOW-style double affine coupling: both halves transformed, each given the other.

    With ``x = [x1, x2]`` (``x1`` the first ``features // 2`` features):
    ``y1 = x1 * exp(s2(x2, h)) + t2(x2, h)``, then ``y2 = x2 * exp(s1(y1, h)) + t1(y1, h)``.

    Args:
        features: data dimension ``D >= 2`` (odd is fine).
        context_features: width of the semantic embedding ``h``.
        hidden_features: width of each coupling net's hidden layer.
        clamp: soft-clamp bound of the log-scales.
        groups: grouping cache shared by the nets (see ``ContextGroups``).

    Returns:
        A ``CompositeTransform`` of two ``SemanticAffineCouplingTransform``.

    Example:
        >>> block = glow_block(5, context_features=3, hidden_features=8)
        >>> block(torch.randn(2, 5), context=torch.randn(2, 3))[0].shape
        torch.Size([2, 5])
    """
    check_int("features", features, minimum=1)
    if features < 2:
        raise ValueError(f"Expected features >= 2 for a coupling, got {features}.")
    groups = groups if groups is not None else ContextGroups()
    half = features // 2
    first_half = torch.zeros(features, dtype=torch.long)
    first_half[:half] = 1

    def make_net(in_features: int, out_features: int) -> nn.Module:
        return SemanticCouplingNet(
            in_features, out_features, context_features, hidden_features, groups=groups
        )

    return CompositeTransform(
        [
            SemanticAffineCouplingTransform(first_half, make_net, clamp=clamp),
            SemanticAffineCouplingTransform(1 - first_half, make_net, clamp=clamp),
        ]
    )


class _StandardNormal(StandardNormal):
    """nflows' ``StandardNormal``, but samples take the dtype of the context (or the model).

    nflows draws float32 noise whatever the model's dtype, which breaks
    ``Flow.sample`` for float64 models.
    """

    def _sample(self, num_samples: int, context: Tensor | None) -> Tensor:
        if context is None:
            return torch.randn(
                num_samples, *self._shape, device=self._log_z.device, dtype=self._log_z.dtype
            )
        samples = torch.randn(
            context.shape[0] * num_samples, *self._shape, device=context.device, dtype=context.dtype
        )
        return samples.reshape(context.shape[0], num_samples, *self._shape)


def check_values_at_entries(transform: Transform) -> Transform:
    """Keep the NaN/inf checks only where values enter a chain of our couplings.

    Forward enters at the first :class:`SemanticAffineCouplingTransform`, inverse
    at the last; the others receive what a coupling computed from checked
    values, so scanning them again only costs time (about 10% of sampling).
    Shape, dtype and batch checks stay everywhere.

    Args:
        transform: any transform holding our couplings (e.g. a ``CompositeTransform``).

    Returns:
        The same transform, changed in place.

    Example:
        >>> block = check_values_at_entries(glow_block(4, 3, 8))
        >>> [c.check_values for c in block._transforms]
        [True, True]
    """
    couplings = [m for m in transform.modules() if isinstance(m, SemanticAffineCouplingTransform)]
    for index, coupling in enumerate(couplings):
        entry = index in (0, len(couplings) - 1)
        coupling.check_values = entry
        coupling.transform_net.check_values = entry
    return transform


def _mixing(kind: str, features: int, generator: torch.Generator | None) -> Transform:
    if kind == "reverse":
        return ReversePermutation(features)
    if kind == "random":
        return Permutation(torch.randperm(features, generator=generator))
    return LULinear(features, identity_init=True)


def _check_conditioning(
    conditioning: str,
    semantic_mean: tuple[Tensor, Tensor] | None,
    known_means: tuple[Tensor, Tensor] | None,
    semantic_scale: Tensor | None,
    semantic_shrinkage: float,
) -> None:
    """``conditioning`` is known; the semantic-mean arguments are given only with ``"mean"``."""
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"Expected conditioning in {CONDITIONINGS}, got {conditioning!r}.")
    unused = (
        semantic_mean is None
        and known_means is None
        and semantic_scale is None
        and semantic_shrinkage == 0
    )
    if conditioning != "mean" and not unused:
        raise ValueError(
            "semantic_mean, known_means and semantic_scale are used only with conditioning='mean'."
        )


def _shift_layer(
    features: int,
    dim: int,
    semantic_mean: tuple[Tensor, Tensor] | None,
    known_means: tuple[Tensor, Tensor] | None,
    semantic_scale: Tensor | None,
    semantic_shrinkage: float,
) -> SemanticShiftTransform:
    """The ``conditioning="mean"`` front layer, in float32 (see :func:`build_gsmflow`)."""
    if semantic_mean is None:
        semantic_mean = (torch.zeros(dim, features), torch.zeros(features))
    weight, bias = semantic_mean
    if tuple(weight.shape) != (dim, features) or tuple(bias.shape) != (features,):
        raise ValueError(
            f"Expected semantic_mean of shapes ({dim}, {features}) and ({features},), "
            f"got {tuple(weight.shape)} and {tuple(bias.shape)}."
        )
    vectors, means = known_means if known_means is not None else (None, None)
    return SemanticShiftTransform(
        weight.to(torch.float32),
        bias.to(torch.float32),
        known_vectors=vectors,
        known_means=means.to(torch.float32) if means is not None else None,
        scale=semantic_scale.to(torch.float32) if semantic_scale is not None else None,
        shrinkage=semantic_shrinkage,
    )


def _initialise(
    transform: Transform,
    encoder: nn.Module,
    init_scale: float,
    generator: torch.Generator | None,
) -> None:
    """Draw every parameter from ``generator``: coupling nets, then the encoder's layers.

    Coupling-net parameters get ``init_scale * N(0, 1)``, the encoder's anchor layers
    PyTorch's default ``Linear`` initialisation.
    """
    with torch.no_grad():
        for module in transform.modules():
            if isinstance(module, SemanticCouplingNet):
                for parameter in module.parameters():
                    parameter.copy_(init_scale * torch.randn(parameter.shape, generator=generator))
    for layer in getattr(encoder, "anchor_layers", ()):
        reset_linear(layer, generator)


def build_gsmflow(
    features: int,
    class_embeddings: Tensor,
    *,
    num_blocks: int = 5,
    hidden_features: int = 2048,
    semantic_features: int = 1024,
    clamp: float = 1.0,
    permutation: str | None = None,
    init_scale: float = 0.01,
    generator: torch.Generator | None = None,
    relative_positioning: bool = True,
    conditioning: str = "couplings",
    semantic_mean: tuple[Tensor, Tensor] | None = None,
    known_means: tuple[Tensor, Tensor] | None = None,
    semantic_scale: Tensor | None = None,
    semantic_shrinkage: float = 0.0,
) -> Flow:
    """Build the paper's conditional flow ``p(x | a)`` as an nflows ``Flow``.

    ``num_blocks`` GLOW double couplings (:func:`glow_block`), each conditioned on
    ``h(a)`` from a :class:`RelativePositioningEncoder` whose anchors come from
    ``class_embeddings``; the encoder is the flow's ``embedding_net``, so
    ``flow.log_prob(x, context=a)`` and ``flow.sample(n, context=a)`` take RAW class
    embeddings ``a``. Base distribution: ``StandardNormal([features])``.
    Coupling-net parameters start at ``init_scale * N(0, 1)`` as in the reference
    code, so the flow starts near the identity; the encoder gets PyTorch's
    default ``Linear`` initialisation (the reference initialises only the flow),
    drawn from ``generator`` too, so a seeded generator fixes every parameter
    (and torch's global RNG is then left as it was).
    The model is placed on the device and dtype of ``class_embeddings``.

    Args:
        features: feature dimension ``D`` (2048 for ResNet-101; any ``D >= 2``).
        class_embeddings: ``[C, A]`` semantic vectors of ALL classes (anchor choice).
        num_blocks: number of GLOW blocks (aPY 5, others 3).
        hidden_features: coupling nets' hidden width (2048 in the paper).
        semantic_features: width of ``h`` (1024 in the paper).
        clamp: soft-clamp bound of the log-scales (1.0 in the paper).
        permutation: mixing inserted between blocks: ``None`` (the paper),
            ``"reverse"``, ``"random"`` or ``"lu"`` (nflows ``LULinear``).
        init_scale: standard deviation of the coupling-net initialisation.
        generator: random source for the initialisation and a random permutation.
        relative_positioning: ``False`` drops the encoder (the paper's ablation):
            the coupling nets take the raw class vector as context and
            ``semantic_features`` is unused.
        conditioning: ``"couplings"`` (the paper: ``h(a)`` in every coupling) or
            ``"mean"`` (not in the paper): the class vector enters only through
            a :class:`~gsmflow_nflows.semantic_mean.SemanticShiftTransform`
            ``x - (a W + b)`` in front of unconditional couplings, so that an
            unseen vector gets the mean a linear map extrapolates to (see
            :mod:`gsmflow_nflows.semantic_mean`). No encoder then.
        semantic_mean: ``(W [A, D], b [D])`` of the shift (e.g. from
            :func:`~gsmflow_nflows.semantic_mean.fit_ridge_map` on the seen class
            means); default zeros (a placeholder a saved state fills in).
        known_means: ``(vectors [K, A], means [K, D])``: classes whose mean is their
            empirical one instead of the linear map's (the seen classes); default
            none, or K = S zeros placeholders when loading a saved state of ``S``
            known classes is intended (pass zeros of the right shape).
        semantic_scale: ``[D]`` positive units of the residual ``(x - mu(a)) /
            sigma`` (e.g. :func:`~gsmflow_nflows.semantic_mean.residual_scale`);
            default ones.
        semantic_shrinkage: ``lambda`` in [0, 1] with which samples of classes
            without an empirical mean blend the flow's residual with Gaussian
            noise (e.g. :func:`~gsmflow_nflows.semantic_mean.residual_shrinkage`;
            see :func:`generate_features`); default 0.

    Returns:
        An ``nflows.flows.Flow``.

    Example:
        >>> classes = torch.randn(6, 4)
        >>> flow = build_gsmflow(10, classes, num_blocks=2, hidden_features=16,
        ...                      semantic_features=8)
        >>> flow.log_prob(torch.randn(3, 10), context=classes[:3]).shape
        torch.Size([3])
    """
    check_int("features", features, minimum=1)
    if features < 2:
        raise ValueError(f"Expected features >= 2 for a coupling flow, got {features}.")
    check_int("num_blocks", num_blocks, minimum=1)
    check_int("hidden_features", hidden_features, minimum=1)
    check_int("semantic_features", semantic_features, minimum=1)
    if permutation not in PERMUTATIONS:
        raise ValueError(f"Expected permutation in {PERMUTATIONS}, got {permutation!r}.")
    if not isinstance(init_scale, (int, float)) or not init_scale >= 0:
        raise ValueError(f"Expected init_scale >= 0, got {init_scale!r}.")
    check_matrix("class_embeddings", class_embeddings)
    _check_conditioning(
        conditioning, semantic_mean, known_means, semantic_scale, semantic_shrinkage
    )

    # Building nn.Linear layers draws their default init from the global RNG. With a
    # generator, every parameter is overwritten from it below: undo those draws.
    keep = generator is not None
    groups = ContextGroups()
    layers: list[Transform] = []
    if conditioning == "mean":
        layers.append(
            _shift_layer(
                features,
                class_embeddings.shape[1],
                semantic_mean,
                known_means,
                semantic_scale,
                semantic_shrinkage,
            )
        )
        encoder: nn.Module = nn.Identity()
        context_features = 0
    elif relative_positioning:
        with keep_global_rng(enabled=keep):
            encoder = RelativePositioningEncoder.from_class_embeddings(
                class_embeddings, semantic_features, groups=groups
            )
        context_features = semantic_features
    else:
        encoder = nn.Identity()
        context_features = class_embeddings.shape[1]
    for index in range(num_blocks):
        if index > 0 and permutation is not None:
            layers.append(_mixing(permutation, features, generator))
        with keep_global_rng(enabled=keep):
            layers.append(glow_block(features, context_features, hidden_features, clamp, groups))
    transform = check_values_at_entries(CompositeTransform(layers))
    _initialise(transform, encoder, init_scale, generator)
    flow = Flow(transform, _StandardNormal([features]), embedding_net=encoder)
    return flow.to(device=class_embeddings.device, dtype=class_embeddings.dtype)


def generate_features(
    flow: Flow,
    class_embeddings: Tensor,
    num_per_class: int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    centre: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample ``num_per_class`` features for each class from a trained flow.

    ``z ~ N(0, I)`` is mapped through the inverse flow with the class's semantic
    embedding, in batches of ``batch_size`` rows (each batch holds one class, so
    the per-class part of the coupling nets is computed once per batch).
    Runs under ``torch.inference_mode``; device and dtype follow the flow.

    A flow with a semantic mean and a ``shrinkage`` ``lambda > 0`` (see
    :class:`~gsmflow_nflows.semantic_mean.SemanticShiftTransform`) blends
    the residual of classes without an empirical mean (the unseen ones) with
    independent per-dimension Gaussian noise, drawn from ``generator`` after
    all ``z``: ``mu + sqrt(1 - lambda) (x - mu) + sqrt(lambda) sigma eps``.

    Args:
        flow: a flow from :func:`build_gsmflow` (or any nflows ``Flow`` whose
            ``embedding_net`` takes raw class embeddings).
        class_embeddings: ``[C, A]`` raw semantic vectors of the classes to sample.
        num_per_class: samples per class, >= 1.
        batch_size: rows per inverse pass; default ``min(num_per_class, 4096)``.
        generator: random source for ``z``. On another device than the flow, the
            noise is drawn there and copied over.
        centre: after the blend below, shift each class's samples so that their mean is the flow's
            semantic mean ``mu(a)`` exactly (a flow with ``conditioning="mean"``
            only). ``None`` (default): centre when the flow has a semantic mean
            and ``num_per_class >= 2``. The class mean is all such a flow knows
            of an unseen class; a residual whose sample mean drifted from 0
            during training (it did, by up to one within-class standard
            deviation, differently per seed) would move every unseen class the
            same way, towards or into the seen ones.

    Returns:
        ``(features [C * num_per_class, D], labels [C * num_per_class])`` with
        labels ``0..C-1`` in the order of ``class_embeddings``, class by class.

    Example:
        >>> classes = torch.randn(4, 3)
        >>> flow = build_gsmflow(6, classes, num_blocks=1, hidden_features=8, semantic_features=4)
        >>> features, labels = generate_features(flow, classes[:2], 5)
        >>> features.shape, labels.tolist()
        (torch.Size([10, 6]), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    """
    check_int("num_per_class", num_per_class, minimum=1)
    batch_size = min(num_per_class, 4096) if batch_size is None else batch_size
    check_int("batch_size", batch_size, minimum=1)
    parameter = next(flow.parameters())
    device, dtype = parameter.device, parameter.dtype
    check_matrix("class_embeddings", class_embeddings)
    class_embeddings = class_embeddings.to(device=device, dtype=dtype)
    features = flow._distribution._shape[0]
    num_classes = class_embeddings.shape[0]
    noise_device = generator.device if generator is not None else device

    output = torch.empty(num_classes * num_per_class, features, device=device, dtype=dtype)
    with torch.inference_mode():
        contexts = flow._embedding_net(class_embeddings)
        row = 0
        for index in range(num_classes):
            for start in range(0, num_per_class, batch_size):
                rows = min(batch_size, num_per_class - start)
                noise = torch.randn(
                    rows, features, generator=generator, device=noise_device, dtype=dtype
                ).to(device)
                context = contexts[index : index + 1].expand(rows, -1)
                output[row : row + rows] = flow._transform.inverse(noise, context=context)[0]
                row += rows
        shift = _semantic_shift(flow)
        if shift is not None and float(shift.shrinkage) > 0:
            noise = torch.randn(
                output.shape, generator=generator, device=noise_device, dtype=dtype
            ).to(device)
            grouped = output.view(num_classes, num_per_class, features)
            output = shift.blend(grouped, class_embeddings, noise.view_as(grouped))
            output = output.reshape(num_classes * num_per_class, features)
        if centre is None:
            centre = shift is not None and num_per_class >= 2
        if centre:
            if shift is None:
                raise ValueError(
                    "centre=True needs a flow with a semantic mean (conditioning='mean')."
                )
            grouped = output.view(num_classes, num_per_class, features)
            target = shift.mean(class_embeddings).to(dtype)
            grouped += (target - grouped.mean(dim=1)).unsqueeze(1)
    labels = torch.arange(num_classes, device=device).repeat_interleave(num_per_class)
    return output, labels


def _semantic_shift(flow: Flow) -> SemanticShiftTransform | None:
    """The flow's :class:`SemanticShiftTransform` (its first transform), if it has one."""
    transforms = getattr(flow._transform, "_transforms", [flow._transform])
    first = transforms[0] if len(transforms) else None
    return first if isinstance(first, SemanticShiftTransform) else None
