"""Typed containers of the data layer: a loaded GZSL dataset and a known dataset's description."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gsmflow_nflows.data.errors import DatasetError

__all__ = ["DatasetInfo", "GZSLData"]


@dataclass(frozen=True, eq=False)
class GZSLData:
    """A generalized zero-shot learning dataset, ready for training and evaluation.

    Every array is a torch tensor, on the CPU as loaded (see :meth:`to`): features
    ``float32``, labels and class ids ``int64``.

    Label conventions:
        * ``train_labels`` and ``test_seen_labels`` are in ``0..S-1``: they index
          ``seen_classes`` and the rows of ``seen_embeddings``.
        * ``test_unseen_labels`` are in ``0..U-1``: they index ``unseen_classes`` and the rows
          of ``unseen_embeddings``.
        * ``seen_classes`` / ``unseen_classes`` hold 0-based original class ids (the column of
          the class in the ``.mat`` file, the index into ``class_names``), sorted ascending.
        * In the GZSL classifier (S + U outputs) seen classes take output indices ``0..S-1``
          and unseen classes ``S..S+U-1``; so a test-unseen label ``u`` is output ``S + u``.

    With ``split="val"`` the "unseen" part holds the validation classes (xlsa17 ``val_loc``) and
    the "test seen" part a held-out slice of the ``train_loc`` images (see ``load_xlsa17``).

    Attributes:
        name: Dataset name (the folder name, e.g. ``"APY"``).
        train_features: ``[N, D]`` training features of seen classes.
        train_labels: ``[N]`` seen-class indices.
        test_seen_features: ``[Ns, D]`` test features of seen classes.
        test_seen_labels: ``[Ns]`` seen-class indices.
        test_unseen_features: ``[Nu, D]`` test features of unseen classes.
        test_unseen_labels: ``[Nu]`` unseen-class indices.
        seen_classes: ``[S]`` original class ids of the seen classes.
        unseen_classes: ``[U]`` original class ids of the unseen classes.
        seen_embeddings: ``[S, A]`` semantic vectors of the seen classes.
        unseen_embeddings: ``[U, A]`` semantic vectors of the unseen classes.
        class_names: Names of all classes, indexed by original class id.
        split: ``"test"`` or ``"val"``.

    Example:
        >>> data = load_xlsa17("~/.cache/gsmflow", "apy")  # doctest: +SKIP
        >>> data.num_seen, data.num_unseen, data.feature_dim  # doctest: +SKIP
        (20, 12, 2048)
    """

    name: str
    train_features: Tensor
    train_labels: Tensor
    test_seen_features: Tensor
    test_seen_labels: Tensor
    test_unseen_features: Tensor
    test_unseen_labels: Tensor
    seen_classes: Tensor
    unseen_classes: Tensor
    seen_embeddings: Tensor
    unseen_embeddings: Tensor
    class_names: tuple[str, ...]
    split: str = "test"
    #: ``[D]`` float64: with ``feature_scale``, how the loader scaled the raw features:
    #: ``scaled = (raw - feature_shift) / feature_scale``. ``None``: loaded unscaled.
    feature_shift: Tensor | None = None
    #: ``[D]`` float64, positive (see ``feature_shift``).
    feature_scale: Tensor | None = None

    def __post_init__(self) -> None:
        d = self.train_features.shape[-1]
        a = self.seen_embeddings.shape[-1]
        s, u = self.seen_classes.numel(), self.unseen_classes.numel()
        checks = [
            ("train", self.train_features, self.train_labels, s),
            ("test_seen", self.test_seen_features, self.test_seen_labels, s),
            ("test_unseen", self.test_unseen_features, self.test_unseen_labels, u),
        ]
        for part, feats, labels, n_cls in checks:
            if feats.dim() != 2 or feats.shape[1] != d or feats.dtype != torch.float32:
                raise DatasetError(
                    f"{self.name}: {part}_features must be float32 [n, {d}], "
                    f"got {feats.dtype} {tuple(feats.shape)}"
                )
            if labels.shape != (feats.shape[0],) or labels.dtype != torch.int64:
                raise DatasetError(
                    f"{self.name}: {part}_labels must be int64 [{feats.shape[0]}], "
                    f"got {labels.dtype} {tuple(labels.shape)}"
                )
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_cls):
                raise DatasetError(
                    f"{self.name}: {part}_labels must lie in 0..{n_cls - 1}, "
                    f"got {int(labels.min())}..{int(labels.max())}"
                )
        for kind, emb, n_cls in (
            ("seen", self.seen_embeddings, s),
            ("unseen", self.unseen_embeddings, u),
        ):
            if emb.shape != (n_cls, a) or emb.dtype != torch.float32:
                raise DatasetError(
                    f"{self.name}: {kind}_embeddings must be float32 [{n_cls}, {a}], "
                    f"got {emb.dtype} {tuple(emb.shape)}"
                )
        if self.split not in ("test", "val"):
            raise DatasetError(f"{self.name}: split must be 'test' or 'val', got {self.split!r}")
        if (self.feature_shift is None) != (self.feature_scale is None):
            raise DatasetError(f"{self.name}: give feature_shift and feature_scale together")
        for name in ("feature_shift", "feature_scale"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (d,):
                raise DatasetError(
                    f"{self.name}: {name} must have shape [{d}], got {tuple(value.shape)}"
                )

    def unscale(self, features: Tensor) -> Tensor:
        """Features in the loader's scaled space mapped back to the raw features' units.

        ``raw = features * feature_scale + feature_shift`` (float64); features that
        were loaded unscaled are returned as float64 unchanged.

        Example:
            >>> data.unscale(data.train_features)  # doctest: +SKIP
        """
        values = features.to(torch.float64)
        if self.feature_shift is None or self.feature_scale is None:
            return values
        scale = self.feature_scale.to(values.device, torch.float64)
        return values * scale + self.feature_shift.to(values.device, torch.float64)

    def to(self, device: str | torch.device) -> GZSLData:
        """A copy with every tensor on ``device``, so a run copies its data there once.

        Example:
            >>> data.to("cuda").train_features.device  # doctest: +SKIP
            device(type='cuda', index=0)
        """
        moved: dict[str, Any] = {
            field.name: value.to(device)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def fingerprint(self) -> str:
        """SHA-256 of every array and name of the dataset: same value, same data.

        Checkpoints store it, so a resume on other data with the same name and sizes is
        refused instead of silently mixing two datasets.

        Example:
            >>> data.fingerprint()[:12]  # doctest: +SKIP
            '3f9a0c...'
        """
        digest = hashlib.sha256()
        for field in dataclasses.fields(self):
            if field.name in ("feature_shift", "feature_scale"):
                continue  # a function of the raw training features, not more data
            value = getattr(self, field.name)
            digest.update(field.name.encode())
            if isinstance(value, Tensor):
                array = value.detach().cpu().contiguous()
                digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
                digest.update(array.numpy().tobytes())
            else:
                digest.update(repr(value).encode())
        return digest.hexdigest()

    @property
    def feature_dim(self) -> int:
        """Dimension ``D`` of a visual feature vector."""
        return int(self.train_features.shape[1])

    @property
    def embedding_dim(self) -> int:
        """Dimension ``A`` of a class semantic vector."""
        return int(self.seen_embeddings.shape[1])

    @property
    def num_seen(self) -> int:
        """Number ``S`` of seen classes."""
        return int(self.seen_classes.numel())

    @property
    def num_unseen(self) -> int:
        """Number ``U`` of unseen (or, with ``split="val"``, validation) classes."""
        return int(self.unseen_classes.numel())

    @property
    def num_train(self) -> int:
        """Number ``N`` of training features."""
        return int(self.train_features.shape[0])

    def summary(self) -> str:
        """One line describing the dataset's sizes.

        Returns:
            E.g. ``"APY (split=test): 32 classes (20 seen / 12 unseen), features 2048-d,
            embeddings 64-d; train 5932, test seen 1483, test unseen 7924"``.
        """
        return (
            f"{self.name} (split={self.split}): {self.num_seen + self.num_unseen} classes "
            f"({self.num_seen} seen / {self.num_unseen} unseen), features {self.feature_dim}-d, "
            f"embeddings {self.embedding_dim}-d; train {self.num_train}, "
            f"test seen {self.test_seen_features.shape[0]}, "
            f"test unseen {self.test_unseen_features.shape[0]}"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What is known of a public GZSL dataset: its folder, expected sizes and where to get it.

    Attributes:
        name: Lowercase name used on the command line (``"apy"``).
        folder: Folder name in the data root and in the archive (``"APY"``).
        num_classes: All classes.
        num_seen: Seen classes (``trainval_loc``).
        num_unseen: Unseen classes (``test_unseen_loc``).
        attribute_dim: Rows of ``att`` in ``att_splits.mat``.
        num_images: Images (columns of ``features`` in ``res101.mat``).
        num_trainval: Length of ``trainval_loc``.
        num_test_seen: Length of ``test_seen_loc``.
        num_test_unseen: Length of ``test_unseen_loc``.
        url: Archive to download it from.
        sha256: SHA-256 of that archive when known (checked after download), else ``None``.
        note: Short remark shown by ``gsmflow datasets``.
    """

    name: str
    folder: str
    num_classes: int
    num_seen: int
    num_unseen: int
    attribute_dim: int
    num_images: int
    num_trainval: int
    num_test_seen: int
    num_test_unseen: int
    url: str | None = None
    sha256: str | None = None
    note: str = ""
