"""Known datasets, the default data root, and ``load_dataset``: the one entry point of the CLI."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io

from gsmflow_nflows.atomic_write import current_umask
from gsmflow_nflows.data.digits import DIGITS_FOLDER, make_digits_gzsl
from gsmflow_nflows.data.errors import DatasetError
from gsmflow_nflows.data.synthetic import SYNTHETIC_FOLDER, SYNTHETIC_SETTINGS, make_synthetic_gzsl
from gsmflow_nflows.data.types import DatasetInfo, GZSLData
from gsmflow_nflows.data.validation import read_mat
from gsmflow_nflows.data.xlsa17 import FEATURES_FILE, find_dataset_dir, load_xlsa17

__all__ = [
    "DIGITS_INFO",
    "KNOWN_DATASETS",
    "SYNTHETIC_INFO",
    "dataset_status",
    "default_data_root",
    "load_dataset",
]

#: Environment variable overriding the default data root.
DATA_ROOT_ENV = "GSMFLOW_DATA"

# The official xlsa17 archive of Xian et al. (CVPR 2017), linked from the MPI-INF
# "zero-shot learning" research page and cited by many GZSL READMEs; it holds
# xlsa17/data/{APY,AWA1,AWA2,CUB,SUN}/{res101.mat,att_splits.mat}.
XLSA17_URL = "http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip"
# FLO in the xlsa17 format comes with the archive of Xian et al. (CVPR 2018, "Feature
# Generating Networks for Zero-Shot Learning"), the "code" link of that paper as listed in
# public zero-shot-learning paper lists. Its inner layout is unverified, so the extractor
# looks for FLO/att_splits.mat at any depth.
FLO_URL = "http://datasets.d2.mpi-inf.mpg.de/xian/cvpr18xian.zip"

#: Known public datasets by lowercase name; statistics from the xlsa17 proposed splits.
KNOWN_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("apy", "APY", 32, 20, 12, 64, 15339, 5932, 1483, 7924, XLSA17_URL),
        DatasetInfo("awa1", "AWA1", 50, 40, 10, 85, 30475, 19832, 4958, 5685, XLSA17_URL),
        DatasetInfo("awa2", "AWA2", 50, 40, 10, 85, 37322, 23527, 5882, 7913, XLSA17_URL),
        DatasetInfo(
            "cub", "CUB", 200, 150, 50, 312, 11788, 7057, 1764, 2967, XLSA17_URL,
            note="GSMFlow uses 1024-d sentence embeddings: semantic='sent' (sent_splits.mat)",
        ),
        DatasetInfo("sun", "SUN", 717, 645, 72, 102, 14340, 10320, 2580, 1440, XLSA17_URL),
        DatasetInfo(
            "flo", "FLO", 102, 82, 20, 1024, 8189, 5631, 1403, 1155, FLO_URL,
            note="1024-d sentence embeddings in att_splits.mat",
        ),
    )
}  # fmt: skip

_s = SYNTHETIC_SETTINGS
#: The built-in synthetic dataset, generated on first use into ``<data_root>/SYNTHETIC``.
SYNTHETIC_INFO = DatasetInfo(
    "synthetic",
    SYNTHETIC_FOLDER,
    _s["num_classes"],
    _s["num_seen"],
    _s["num_classes"] - _s["num_seen"],
    _s["attribute_dim"],
    _s["num_seen"] * (_s["train_per_class"] + _s["test_seen_per_class"])
    + (_s["num_classes"] - _s["num_seen"]) * _s["test_unseen_per_class"],
    _s["num_seen"] * _s["train_per_class"],
    _s["num_seen"] * _s["test_seen_per_class"],
    (_s["num_classes"] - _s["num_seen"]) * _s["test_unseen_per_class"],
    None,
    note="generated on demand, aPY-shaped",
)
del _s

#: The built-in digits dataset (scikit-learn's 1,797 handwritten digits, seven-segment
#: attributes, digits 2/5/7 unseen), generated on first use into ``<data_root>/DIGITS``.
DIGITS_INFO = DatasetInfo(
    "digits",
    DIGITS_FOLDER,
    10,
    7,
    3,
    7,
    1797,
    1007,
    252,
    538,
    None,
    note="real handwritten digits from scikit-learn, seven-segment attributes; "
    "generated on first use",
)

#: Built-in datasets by name: their description and the function writing their folder.
_BUILTIN: dict[str, tuple[DatasetInfo, Callable[[Path], object], str]] = {
    SYNTHETIC_INFO.name: (
        SYNTHETIC_INFO,
        lambda out: make_synthetic_gzsl(out, **SYNTHETIC_SETTINGS),
        # what the generated files depend on; a folder made by other settings is regenerated
        json.dumps({"generator": "make_synthetic_gzsl/2", **SYNTHETIC_SETTINGS}, sort_keys=True),
    ),
    DIGITS_INFO.name: (
        DIGITS_INFO,
        lambda out: make_digits_gzsl(out, seed=0),
        json.dumps({"generator": "make_digits_gzsl/1", "seed": 0}, sort_keys=True),
    ),
}
#: The file in a built-in dataset's folder that records how it was generated.
RECIPE_FILE = "GENERATED.json"


def default_data_root() -> Path:
    """The data root: ``$GSMFLOW_DATA`` if set, else ``~/.cache/gsmflow``.

    Returns:
        The folder (not created).

    Example:
        >>> default_data_root()  # doctest: +SKIP
        PosixPath('/home/me/.cache/gsmflow')
    """
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/gsmflow").expanduser()


def _ensure_generated(
    root: Path, folder: str, write: Callable[[Path], object], recipe: str
) -> None:
    """Generate a built-in dataset into ``root/folder`` unless it is there, made by ``recipe``.

    ``write`` fills a temporary folder beside the target, which is then renamed into place,
    so that an interrupted generation never leaves a half-written dataset behind. The folder
    records ``recipe`` (in ``GENERATED.json``); one made by an older version of the generator
    (or by hand) is regenerated, so a cached folder never silently stands for other data.
    """
    target = root / folder
    stamp = target / RECIPE_FILE
    complete = (target / FEATURES_FILE).is_file() and (target / "att_splits.mat").is_file()
    if complete and stamp.is_file() and stamp.read_text() == recipe:
        return
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=root))
    try:
        write(tmp)
        (tmp / RECIPE_FILE).write_text(recipe)
        if target.exists():  # incomplete, or made by other settings: replace it
            shutil.rmtree(target)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_dataset(
    name: str,
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    semantic: str = "att",
    preprocess: bool = True,
) -> GZSLData:
    """Load a dataset by name: a known one, a built-in one, or any xlsa17 folder in the root.

    Args:
        name: ``apy``, ``awa1``, ``awa2``, ``cub``, ``sun``, ``flo`` (looked up in
            ``data_root``); the built-in ``synthetic`` or ``digits`` (generated
            deterministically into ``<data_root>/SYNTHETIC`` or ``<data_root>/DIGITS`` on
            first use, then reused); or the name of any folder under ``data_root`` holding
            ``res101.mat`` + ``att_splits.mat``. Case-insensitive.
        data_root: Folder with one sub-folder per dataset; default ``default_data_root()``.
        split: ``"test"`` or ``"val"`` (see ``load_xlsa17``).
        semantic: Which ``<semantic>_splits.mat`` to use (``"att"``, CUB: ``"sent"``).
        preprocess: The reference min-max scaling fitted on training features.

    Returns:
        The dataset.

    Raises:
        DatasetError: Unknown name, known dataset absent (the message says to run
            ``gsmflow download NAME``), or any problem found while loading.

    Example:
        >>> data = load_dataset("synthetic", data_root="/tmp/gsmflow")  # doctest: +SKIP
        >>> data.num_seen, data.num_unseen  # doctest: +SKIP
        (20, 12)
    """
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    key = name.strip().lower()
    try:

        def load(folder: str) -> GZSLData:
            return load_xlsa17(root, folder, split=split, semantic=semantic, preprocess=preprocess)

        if key in _BUILTIN:
            info, write, recipe = _BUILTIN[key]
            _ensure_generated(root, info.folder, write, recipe)
            return load(info.folder)
        if key in KNOWN_DATASETS:
            info = KNOWN_DATASETS[key]
            folder = find_dataset_dir(root, info.folder)
            if folder is None or not (folder / FEATURES_FILE).is_file():
                raise DatasetError(
                    f"dataset {key!r} not found in {root / info.folder}: run "
                    f"`gsmflow download {key} --root {root}` (in Python: download_dataset("
                    f"{key!r}, root=...)) or copy its folder (res101.mat, att_splits.mat) there"
                )
            return load(folder.name)
        if (
            name
            and "/" not in name
            and "\\" not in name
            and find_dataset_dir(root, name) is not None
        ):
            return load(name)
        known = ", ".join([*KNOWN_DATASETS, *_BUILTIN])
        raise DatasetError(
            f"unknown dataset {name!r}: not one of {known} and no folder {name!r} in {root}; "
            "point data_root at the folder that holds it"
        )
    except OSError as exc:  # an unreadable or unwritable data root, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        raise DatasetError(
            f"dataset {name!r}: cannot use the data root {root} ({where}{exc.strerror or exc}); "
            "pass data_root= a folder you can read and write, with free disk space"
        ) from exc


def dataset_status(info: DatasetInfo, root: str | Path | None = None) -> tuple[str, str]:
    """Whether a known dataset is present in ``root`` and matches its expected statistics.

    Only headers of ``res101.mat`` are read (cheap); ``att_splits.mat`` is read in full.

    Args:
        info: The dataset's description (an entry of ``KNOWN_DATASETS``).
        root: Data root; default ``default_data_root()``.

    Returns:
        ``(state, detail)`` with state ``"valid"``, ``"missing"`` or ``"invalid"``.

    Example:
        >>> dataset_status(KNOWN_DATASETS["apy"], "/nonexistent")
        ('missing', 'no folder APY in /nonexistent')
    """
    root = Path(root).expanduser() if root is not None else default_data_root()
    folder = find_dataset_dir(root, info.folder)
    if folder is None:
        return "missing", f"no folder {info.folder} in {root}"
    feat_path, split_path = folder / FEATURES_FILE, folder / "att_splits.mat"
    for path in (feat_path, split_path):
        if not path.is_file():
            return "missing", f"{path} not found"
    try:
        shapes = {n: s for n, s, _ in scipy.io.whosmat(str(feat_path))}
        if "features" not in shapes or "labels" not in shapes:
            return "invalid", f"{feat_path}: keys 'features'/'labels' missing"
        n_images = int(np.prod(shapes["labels"]))
        mat = read_mat(split_path, fix="re-download it")
    except DatasetError as exc:
        return "invalid", str(exc)
    except Exception as exc:  # unreadable header
        return "invalid", f"{feat_path}: unreadable ({type(exc).__name__})"
    expected = {
        "trainval_loc": info.num_trainval,
        "test_seen_loc": info.num_test_seen,
        "test_unseen_loc": info.num_test_unseen,
    }
    for key, count in expected.items():
        got = np.asarray(mat[key]).size if key in mat else None
        if got != count:
            return "invalid", f"{split_path}: {key} has {got} entries, expected {count}"
    if n_images != info.num_images:
        return "invalid", f"{feat_path}: {n_images} images, expected {info.num_images}"
    att = np.asarray(mat.get("att", np.zeros((0, 0))))
    if att.shape != (info.attribute_dim, info.num_classes):
        want = (info.attribute_dim, info.num_classes)
        return "invalid", f"{split_path}: att is {att.shape}, expected {want}"
    return "valid", str(folder)
