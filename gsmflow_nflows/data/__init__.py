"""The data layer: xlsa17 datasets loaded, checked and split for GZSL; built-in synthetic and
digits datasets; downloads.

Example:
    >>> from gsmflow_nflows.data import load_dataset
    >>> data = load_dataset("synthetic")  # doctest: +SKIP
    >>> print(data.summary())  # doctest: +SKIP
"""

from gsmflow_nflows.data.digits import make_digits_gzsl
from gsmflow_nflows.data.download import download_dataset
from gsmflow_nflows.data.errors import DatasetError
from gsmflow_nflows.data.registry import (
    DIGITS_INFO,
    KNOWN_DATASETS,
    SYNTHETIC_INFO,
    dataset_status,
    default_data_root,
    load_dataset,
)
from gsmflow_nflows.data.synthetic import make_synthetic_gzsl
from gsmflow_nflows.data.types import DatasetInfo, GZSLData
from gsmflow_nflows.data.xlsa17 import load_xlsa17

__all__ = [
    "DIGITS_INFO",
    "KNOWN_DATASETS",
    "SYNTHETIC_INFO",
    "DatasetError",
    "DatasetInfo",
    "GZSLData",
    "dataset_status",
    "default_data_root",
    "download_dataset",
    "load_dataset",
    "load_xlsa17",
    "make_digits_gzsl",
    "make_synthetic_gzsl",
]
