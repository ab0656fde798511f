"""Draw digits the flow never saw: a class-conditional image flow on the built-in digits.

The built-in ``digits`` dataset holds scikit-learn's 8x8 handwritten digits
(64 min-max-scaled pixels) with each digit's seven-segment display encoding as
its class embedding; digits 2, 5 and 7 are unseen. Each image is squeezed from
``[1, 8, 8]`` to ``[4, 4, 4]`` (every 2x2 block of pixels becomes 4 channels)
and modelled by a Glow-like flow: ``ActNorm``, nflows' ``OneByOneConvolution``
and our ``SemanticAffineCouplingTransform`` with nflows' ``ConvResidualNet``.
The coupling nets see the class through a context image: the digit's lit
segments drawn as strokes on the 8x8 grid (squeezed like the images) plus two
coordinate channels. Drawn strokes let a convolution learn "a segment here, ink
here" from the seen digits; the attribute vector tiled over the grid (also a
valid context image) lets the nets memorise the seven seen codes instead, and
in our runs sampled the unseen digits worse. The flow is trained for about a
minute on the seen digits' images (training and seen-test parts), then samples
images of the unseen digits from their segment codes alone. Training stops on
time, so the number of steps, and the pictures, vary with the machine's speed.

The PNG shows, for each unseen digit, a row of real images (never used in
training) above a row of samples, then samples of two seen digits. A logistic
regression fitted on real images of all ten digits (for evaluation only) reports
how often it reads each digit's samples as that digit.

    OMP_NUM_THREADS=1 python examples/zero_shot_digits_images.py --out digits_unseen.png

Needs matplotlib for the PNG: ``pip install "gsmflow-nflows[plot]"``.
"""

from __future__ import annotations

import argparse
import time
import warnings

try:  # first, before nflows (whose 0.14 imports matplotlib too) and a minute of training
    import matplotlib
except ImportError:
    raise SystemExit(
        'This example needs matplotlib for the PNG: pip install "gsmflow-nflows[plot]"'
    ) from None
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.nn.nets import ConvResidualNet
from nflows.transforms.base import CompositeTransform
from nflows.transforms.conv import OneByOneConvolution
from nflows.transforms.normalization import ActNorm
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn
from torch.nn import functional as F

from gsmflow_nflows import SemanticAffineCouplingTransform
from gsmflow_nflows.data import load_dataset

# nflows 0.14's LULinear (under OneByOneConvolution) calls a torch function deprecated in torch 2.x.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated")

SHAPE = (4, 4, 4)  # [channels, height, width] after squeezing an 8x8 image
SEEN_SHOWN = (3, 8)  # seen digits whose samples are shown for comparison


def squeeze(features: Tensor) -> Tensor:
    """``[batch, 64]`` pixel rows to ``[batch, 4, 4, 4]`` (each 2x2 block -> 4 channels)."""
    return F.pixel_unshuffle(features.reshape(-1, 1, 8, 8), 2)


def unsqueeze(images: Tensor) -> Tensor:
    """The inverse of :func:`squeeze`: ``[batch, 4, 4, 4]`` to ``[batch, 8, 8]``."""
    return F.pixel_shuffle(images, 2)[:, 0]


#: Where each segment ``a``..``g`` of a seven-segment display lies on the 8x8 grid:
#: (rows, columns) of a one-pixel stroke.
SEGMENT_STROKES = {
    "a": (slice(0, 1), slice(2, 6)),
    "b": (slice(0, 4), slice(5, 6)),
    "c": (slice(4, 8), slice(5, 6)),
    "d": (slice(7, 8), slice(2, 6)),
    "e": (slice(4, 8), slice(2, 3)),
    "f": (slice(0, 4), slice(2, 3)),
    "g": (slice(3, 5), slice(2, 6)),
}


class ContextImage(nn.Module):
    """``[batch, 7]`` segment codes to a ``[batch, 6, 4, 4]`` context image.

    Channels: the lit segments drawn on the 8x8 grid and squeezed like the data
    (4 channels), and the row and column coordinates in ``[-1, 1]`` (2), so a net
    knows where on the grid it is.
    """

    channels = 4 + 2

    def __init__(self) -> None:
        super().__init__()
        strokes = torch.zeros(len(SEGMENT_STROKES), 8, 8)
        for index, (rows, cols) in enumerate(SEGMENT_STROKES.values()):
            strokes[index, rows, cols] = 1.0
        self.register_buffer("strokes", strokes)
        grid = torch.linspace(-1, 1, 4)
        rows, cols = grid[:, None].expand(4, 4), grid[None, :].expand(4, 4)
        self.register_buffer("coordinates", torch.stack([rows, cols])[None])

    def forward(self, codes: Tensor) -> Tensor:
        batch = codes.shape[0]
        drawn = torch.einsum("bs,shw->bhw", codes, self.strokes).clamp(max=1.0)
        coordinates = self.coordinates.expand(batch, -1, -1, -1)
        return torch.cat([squeeze(drawn.reshape(batch, 64)), coordinates], dim=1)


def build_flow(blocks: int, hidden: int) -> Flow:
    """A Glow-like image flow whose couplings see the class through a context image."""

    def make_net(in_channels: int, out_channels: int) -> nn.Module:
        return ConvResidualNet(
            in_channels, out_channels, hidden, context_channels=ContextImage.channels, num_blocks=1
        )

    layers = []
    for _ in range(blocks):
        layers += [
            ActNorm(SHAPE[0]),
            OneByOneConvolution(SHAPE[0]),
            SemanticAffineCouplingTransform([1, 1, 0, 0], make_net),
        ]
    return Flow(CompositeTransform(layers), StandardNormal(list(SHAPE)), ContextImage())


def sample(flow: Flow, code: Tensor, count: int, temperature: float) -> Tensor:
    """``count`` images ``[count, 8, 8]`` for one class, from noise scaled by ``temperature``."""
    noise = temperature * torch.randn(count, *SHAPE)
    context = flow._embedding_net(code.expand(count, -1))
    images, _ = flow._transform.inverse(noise, context=context)
    return unsqueeze(images)


def main() -> None:
    """Train on the seen digits, sample the unseen ones, report and plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="digits_unseen.png", help="PNG file to write")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time budget")
    parser.add_argument("--blocks", type=int, default=6, help="flow steps")
    parser.add_argument("--hidden", type=int, default=32, help="ConvResidualNet channels")
    parser.add_argument("--temperature", type=float, default=0.8, help="noise scale for samples")
    parser.add_argument("--samples", type=int, default=10, help="images per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="default: $GSMFLOW_DATA or ~/.cache")
    args = parser.parse_args()

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    torch.manual_seed(args.seed)
    data = load_dataset("digits", data_root=args.data_root)
    seen_images = torch.cat([data.train_features, data.test_seen_features])
    seen_labels = torch.cat([data.train_labels, data.test_seen_labels])  # into seen_classes
    images = squeeze(seen_images)
    # The binary segment codes (the dataset's embeddings are L2-normalised: a lit segment
    # would weigh 0.71 in a "1" and 0.38 in an "8").
    seen_codes, unseen_codes = (
        (data.seen_embeddings > 0).float(),
        (data.unseen_embeddings > 0).float(),
    )
    context = seen_codes[seen_labels]
    flow = build_flow(args.blocks, args.hidden)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    dimensions = images[0].numel()

    print(f"training on {len(images)} images of seen digits {data.seen_classes.tolist()}")
    start = last_report = time.perf_counter()
    step = 0
    while time.perf_counter() - start < args.seconds:
        batch = torch.randint(0, len(images), (128,))
        # Uniform dequantisation noise of about one grey level (the raw pixels are 0..16).
        x = images[batch] + (torch.rand(128, *SHAPE) - 0.5) / 16
        loss = -flow.log_prob(x, context=context[batch]).mean() / dimensions
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if time.perf_counter() - last_report > 15 or step == 1:
            last_report = time.perf_counter()
            elapsed = last_report - start
            print(f"step {step:5d}  {elapsed:4.0f} s  NLL per dimension {loss.item():7.3f}")
    print(f"trained {step} steps in {time.perf_counter() - start:.0f} s")

    flow.eval()
    real = {}  # original digit -> real images
    for classes, features, labels in (
        (data.seen_classes, seen_images, seen_labels),
        (data.unseen_classes, data.test_unseen_features, data.test_unseen_labels),
    ):
        for index, digit in enumerate(classes.tolist()):
            real[digit] = features[labels == index]
    code = {  # original digit -> its segment code
        digit: row
        for classes, rows in ((data.seen_classes, seen_codes), (data.unseen_classes, unseen_codes))
        for digit, row in zip(classes.tolist(), rows, strict=True)
    }
    shown = [*data.unseen_classes.tolist(), *SEEN_SHOWN]
    with torch.no_grad():
        drawn = {d: sample(flow, code[d][None], 200, args.temperature) for d in shown}

    # Evaluation only: a classifier of real images of all ten digits reads the samples.
    digits = sorted(real)
    reader = LogisticRegression(max_iter=2000).fit(
        torch.cat([real[d] for d in digits]).numpy(),
        torch.cat([torch.full((len(real[d]),), d) for d in digits]).numpy(),
    )
    for digit in shown:
        kind = "unseen" if digit in data.unseen_classes.tolist() else "seen"
        read = reader.predict(drawn[digit].reshape(-1, 64).clamp(0, 1).numpy())
        counts = torch.bincount(torch.as_tensor(read), minlength=10)
        top = ", ".join(f"{d}: {int(c)}" for d, c in enumerate(counts.tolist()) if c)
        print(f"{kind} digit {digit}: {(read == digit).mean():.0%} of 200 samples read as {digit}")
        print(f"    read as ({top})")

    rows = []
    for digit in shown:
        if digit in data.unseen_classes.tolist():
            rows.append((f"real {digit}\n(unseen)", real[digit][: args.samples].reshape(-1, 8, 8)))
        rows.append((f"sampled {digit}", drawn[digit][: args.samples]))
    figure, axes = plt.subplots(
        len(rows), args.samples, figsize=(args.samples * 0.8, len(rows) * 0.9), squeeze=False
    )
    for (label, pictures), line in zip(rows, axes, strict=True):
        for picture, axis in zip(pictures, line, strict=False):
            axis.imshow(picture.clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1)
        for axis in line:
            axis.set_xticks([])
            axis.set_yticks([])
        line[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(
        f"Unseen digits {data.unseen_classes.tolist()}: real, and sampled from their "
        f"seven-segment codes; seen {list(SEEN_SHOWN)}: sampled (temperature {args.temperature})",
        fontsize=9,
    )
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
