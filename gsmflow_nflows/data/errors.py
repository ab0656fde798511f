"""The data layer's exceptions: :class:`DatasetError` for problems a user can fix, a warning.

``DatasetError`` is defined in :mod:`gsmflow_nflows.errors` (a ``GSMFlowError`` and a
``ValueError``) and importable from here as before.

Example:
    >>> from gsmflow_nflows.data.errors import DatasetError
    >>> issubclass(DatasetError, ValueError)
    True
"""

from gsmflow_nflows.errors import DatasetError

__all__ = ["DatasetError", "DatasetWarning"]


class DatasetWarning(UserWarning):
    """Data that loads but is degenerate (e.g. identical class vectors): one line, like errors.

    Example:
        >>> import warnings
        >>> warnings.simplefilter("error", DatasetWarning)  # doctest: +SKIP
    """
