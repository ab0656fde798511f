"""GSMFlow's semantic-conditioned affine coupling, as an nflows transform.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022, section III.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from nflows.transforms.coupling import CouplingTransform
from torch import Tensor, nn

from gsmflow_nflows._checks import (
    check_finite,
    check_int,
    check_matrix,
    check_same_batch,
    check_tensor,
)
from gsmflow_nflows.context_groups import ContextGroups, grouped_linear

#: The constant of the soft clamp, 0.636 ~ 2/pi, so that scales stay inside (e^-clamp, e^clamp).
ATAN_SCALE = 0.636


def soft_clamp(unconstrained: Tensor, clamp: float) -> Tensor:
    """GSMFlow's soft clamp of the log-scale: ``clamp * 0.636 * atan(s / clamp)``.

    The result lies strictly inside ``(-clamp, clamp)`` (0.636 * pi/2 < 1), so
    the coupling's scale ``exp(result)`` lies inside ``(e^-clamp, e^clamp)``.

    Args:
        unconstrained: raw log-scales from the coupling network.
        clamp: the bound, > 0.

    Returns:
        The clamped log-scales, same shape, dtype and device.

    Example:
        >>> soft_clamp(torch.tensor([0.0, 1e6]), clamp=1.0)
        tensor([0.0000, 0.9990])
    """
    return clamp * ATAN_SCALE * torch.atan(unconstrained / clamp)


class SemanticCouplingNet(nn.Module):
    """The paper's coupling network: an MLP on ``cat(inputs, context)``.

    ``Linear(in + context, hidden) -> LeakyReLU(0.2) -> Linear(hidden, out)``.
    The first layer is stored as two blocks, ``input_layer`` (with the bias) and
    ``context_layer`` (without), whose sum is exactly the linear map of the
    concatenation: ``W [x; h] + b = W_x x + W_h h + b``. That lets the context
    part be computed once per distinct class in the batch (see
    :class:`~gsmflow_nflows.context_groups.ContextGroups`).

    Args:
        in_features: width of the identity half fed to the net.
        out_features: width of the output (2 x transformed features for an affine coupling).
        context_features: width of the semantic embedding ``h``; ``0`` makes an
            unconditional net that ignores its context.
        hidden_features: width of the hidden layer (2048 in the paper).
        groups: a grouping cache shared by the nets of one flow; a private one if ``None``.

    Example:
        >>> net = SemanticCouplingNet(3, 4, context_features=5, hidden_features=8)
        >>> net(torch.randn(2, 3), torch.randn(2, 5)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        context_features: int,
        hidden_features: int = 2048,
        *,
        groups: ContextGroups | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("out_features", out_features),
            ("hidden_features", hidden_features),
        ):
            check_int(name, value, minimum=1)
        check_int("context_features", context_features, minimum=0)
        self.in_features = in_features
        self.out_features = out_features
        self.context_features = context_features
        self.hidden_features = hidden_features
        self.input_layer = nn.Linear(in_features, hidden_features)
        self.context_layer = (
            nn.Linear(context_features, hidden_features, bias=False) if context_features else None
        )
        self.activation = nn.LeakyReLU(0.2)
        self.output_layer = nn.Linear(hidden_features, out_features)
        self.groups = groups if groups is not None else ContextGroups()
        #: Check the context for NaN/inf on every call. A flow whose nets all see
        #: the same context checks it in the nets of its entry couplings only.
        self.check_values = True

    def forward(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        if inputs.dim() != 2:  # nn.Linear would silently act on the last dimension
            raise ValueError(
                f"SemanticCouplingNet takes inputs of shape [batch, {self.in_features}], got "
                f"{list(inputs.shape)}; for images use a convolutional net such as nflows' "
                "ConvResidualNet."
            )
        if self.context_layer is None:  # an unconditional net: the context is not used
            return self.output_layer(self.activation(self.input_layer(inputs)))
        if context is None:
            raise ValueError(
                f"SemanticCouplingNet needs a context of width {self.context_features}; got None."
            )
        check_matrix("context", context, columns=self.context_features, finite=False)
        if self.check_values:
            # An expanded single row (one class per batch) needs checking once.
            check_finite("context", context[:1] if context.stride(0) == 0 else context)
        check_same_batch(inputs, context)
        dtype = self.input_layer.weight.dtype
        autocast = torch.is_autocast_enabled(inputs.device.type)
        if not autocast and (inputs.dtype != dtype or context.dtype != dtype):
            raise TypeError(
                f"Expected inputs and context of dtype {dtype} (the network's), got "
                f"{inputs.dtype} and {context.dtype}; convert the data or the model with .to()."
            )
        hidden = self.input_layer(inputs) + grouped_linear(self.context_layer, context, self.groups)
        return self.output_layer(self.activation(hidden))

    def first_layer_weight(self) -> Tensor:
        """The first layer as one ``[hidden, in + ctx]`` matrix on ``cat(inputs, context)``."""
        if self.context_layer is None:
            return self.input_layer.weight
        return torch.cat([self.input_layer.weight, self.context_layer.weight], dim=1)


class SemanticAffineCouplingTransform(CouplingTransform):
    """Affine coupling conditioned on a class semantic embedding (the nflows ``context``).

    Features with ``mask > 0`` are transformed, the others pass unchanged and,
    with the context, feed the network: ``y = x * exp(s) + t`` with
    ``s = soft_clamp(s_raw, clamp)`` and ``[s_raw, t] = net(identity_split, context)``
    (the first half of the net's output is the log-scale, the second the shift,
    as in FrEIA's GLOW coupling). ``logabsdet = sum(s)``. Unlike nflows'
    ``AffineCouplingTransform`` (scale ``sigmoid(.) + 1e-3 <= 1.001``), the scale
    can grow as well as shrink, inside ``(e^-clamp, e^clamp)``.

    Inputs are ``[batch, features]`` or, like nflows' ``CouplingTransform``,
    ``[batch, channels, ...]`` (images ``[batch, C, H, W]``): the mask splits
    dimension 1, the net gets the identity channels ``[batch, C_id, ...]`` and must
    return ``[batch, 2 * C_tr, ...]``, and ``logabsdet`` sums ``s`` over every
    non-batch dimension. The context is passed to the net unchanged: a
    ``[batch, A]`` vector for :class:`SemanticCouplingNet`, a context image
    ``[batch, A, H, W]`` for nflows' ``ConvResidualNet(..., context_channels=A)``.

    Forward maps data to noise, like every nflows transform; ``forward`` and
    ``inverse`` return ``(outputs, logabsdet)`` with ``logabsdet`` of shape ``[batch]``.

    Args:
        mask: 1-d tensor/sequence; ``mask[i] > 0`` marks feature (channel) ``i`` as
            transformed. Needs at least one transformed and one identity feature.
        transform_net_create_fn: ``(in_features, out_features) -> module`` called as
            ``net(identity_split, context)``; e.g. a lambda building a
            :class:`SemanticCouplingNet` (vector inputs) or nflows' ``ConvResidualNet``
            (images).
        clamp: soft-clamp bound of the log-scale, > 0 (1.0 in the paper).

    References:
        Chen et al., GSMFlow, IEEE TMM 2022; Dinh et al., Real NVP, ICLR 2017;
        Ardizzone et al., FrEIA (the soft clamp).

    Example:
        >>> make_net = lambda i, o: SemanticCouplingNet(i, o, context_features=3, hidden_features=8)
        >>> coupling = SemanticAffineCouplingTransform([1, 1, 0, 0, 0], make_net)
        >>> x, h = torch.randn(4, 5), torch.randn(4, 3)
        >>> z, logabsdet = coupling(x, context=h)
        >>> torch.allclose(coupling.inverse(z, context=h)[0], x, atol=1e-6)
        True

        Images, with a context image for a convolutional net:

        >>> from nflows.nn.nets import ConvResidualNet
        >>> make_conv = lambda i, o: ConvResidualNet(i, o, hidden_channels=8, context_channels=3)
        >>> coupling = SemanticAffineCouplingTransform([1, 1, 0, 0], make_conv)
        >>> x, h = torch.randn(4, 4, 8, 8), torch.randn(4, 3, 1, 1).expand(4, 3, 8, 8)
        >>> z, logabsdet = coupling(x, context=h)
        >>> z.shape, logabsdet.shape
        (torch.Size([4, 4, 8, 8]), torch.Size([4]))
    """

    def __init__(
        self,
        mask: Tensor | list[int] | tuple[int, ...],
        transform_net_create_fn: Callable[[int, int], nn.Module],
        clamp: float = 1.0,
    ) -> None:
        mask_tensor = torch.as_tensor(mask)
        if mask_tensor.dim() != 1 or mask_tensor.numel() < 2:
            raise ValueError(
                f"Expected mask to be a 1-d sequence of at least 2 entries, "
                f"got shape {list(mask_tensor.shape)}."
            )
        transformed = int((mask_tensor > 0).sum())
        if transformed == 0 or transformed == mask_tensor.numel():
            raise ValueError(
                f"Expected a mask with both transformed (>0) and identity (<=0) features, "
                f"got {transformed} of {mask_tensor.numel()} transformed."
            )
        if not isinstance(clamp, (int, float)) or not math.isfinite(clamp) or clamp <= 0:
            raise ValueError(f"Expected clamp to be a finite number > 0, got {clamp!r}.")
        self.clamp = float(clamp)
        #: Check inputs for NaN/inf on every call (shapes are always checked). Inside
        #: a flow only the couplings where data and noise enter need it; see
        #: :func:`~gsmflow_nflows.model.check_values_at_entries`.
        self.check_values = True
        super().__init__(mask_tensor, transform_net_create_fn)
        # Halves that are contiguous blocks are split by slicing instead of nflows'
        # index gather/scatter: same values, less memory traffic.
        positive = (mask_tensor > 0).tolist()
        switches = sum(a != b for a, b in itertools.pairwise(positive))
        self._transformed_first: bool | None = positive[0] if switches == 1 else None

    def _transform_dim_multiplier(self) -> int:
        return 2

    def _log_scale_and_shift(self, transform_params: Tensor) -> tuple[Tensor, Tensor]:
        split = self.num_transform_features
        log_scale = soft_clamp(transform_params[:, :split], self.clamp)
        return log_scale, transform_params[:, split:]

    def _coupling_transform_forward(
        self, inputs: Tensor, transform_params: Tensor
    ) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_and_shift(transform_params)
        return inputs * torch.exp(log_scale) + shift, _sum_except_batch(log_scale)

    def _coupling_transform_inverse(
        self, inputs: Tensor, transform_params: Tensor
    ) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_and_shift(transform_params)
        return (inputs - shift) * torch.exp(-log_scale), -_sum_except_batch(log_scale)

    def _check(self, inputs: Tensor, context: Tensor | None) -> None:
        check_tensor("inputs", inputs, floating=True)
        if inputs.dim() < 2 or inputs.shape[1] != self.features:
            vector, image = f"[batch, {self.features}]", f"[batch, {self.features}, ...]"
            if inputs.dim() < 2:
                expected = f"{vector} or {image}"
            else:
                expected = vector if inputs.dim() == 2 else image
            raise ValueError(f"Expected inputs of shape {expected}, got {list(inputs.shape)}.")
        if self.check_values:
            check_finite("inputs", inputs)
        if context is not None:
            check_tensor("context", context, floating=True)
            check_same_batch(inputs, context)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(inputs, context)
        return self._couple(inputs, context, self._coupling_transform_forward)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(inputs, context)
        return self._couple(inputs, context, self._coupling_transform_inverse)

    def _params(self, identity_split: Tensor, context: Tensor | None) -> Tensor:
        """The net's output, checked to be ``[batch, 2 * transformed, ...]`` (trailing as input)."""
        params = self.transform_net(identity_split, context)
        if torch.compiler.is_compiling():
            return params
        expected = (
            identity_split.shape[0],
            2 * self.num_transform_features,
            *identity_split.shape[2:],
        )
        if params.shape != expected:
            raise ValueError(
                f"Expected the transform net to return shape {list(expected)}, got "
                f"{list(params.shape)}; for [batch, channels, ...] inputs use a net that "
                "keeps the trailing dimensions, e.g. nflows' ConvResidualNet for images."
            )
        return params

    def _couple(
        self,
        inputs: Tensor,
        context: Tensor | None,
        coupling: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    ) -> tuple[Tensor, Tensor]:
        """Split dimension 1 by the mask, couple, and put the parts back in place."""
        if self._transformed_first is None:  # a scattered mask: nflows' gather/scatter
            identity_split = inputs[:, self.identity_features, ...]
            transformed, logabsdet = coupling(
                inputs[:, self.transform_features, ...], self._params(identity_split, context)
            )
            outputs = torch.empty_like(inputs)
            outputs[:, self.identity_features, ...] = identity_split
            outputs[:, self.transform_features, ...] = transformed
            return outputs, logabsdet
        # Halves that are contiguous blocks: slices instead of gather/scatter.
        sizes = [self.num_transform_features, self.num_identity_features]
        if not self._transformed_first:
            sizes.reverse()
        first, second = torch.split(inputs, sizes, dim=1)
        transform_split, identity_split = (
            (first, second) if self._transformed_first else (second, first)
        )
        transformed, logabsdet = coupling(transform_split, self._params(identity_split, context))
        parts = (
            [transformed, identity_split]
            if self._transformed_first
            else [identity_split, transformed]
        )
        return torch.cat(parts, dim=1), logabsdet


def _sum_except_batch(values: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``[batch, ...] -> [batch]``."""
    return values.sum(dim=1) if values.dim() == 2 else values.sum(dim=tuple(range(1, values.dim())))
