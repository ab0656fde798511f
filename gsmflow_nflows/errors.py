"""The exceptions the package raises for problems a user can fix.

Every one of them is a :class:`GSMFlowError`, and also keeps the built-in type
it has always been (``ValueError`` or ``OSError``), so ``except ValueError``
written before this hierarchy still catches them::

    GSMFlowError(Exception)
    +-- ConfigError(GSMFlowError, ValueError)      impossible or unknown settings
    +-- DatasetError(GSMFlowError, ValueError)     missing, malformed or undownloadable data
    +-- CheckpointError(GSMFlowError, ValueError)  corrupt, foreign or mismatched saved files
    +-- WriteError(GSMFlowError, OSError)          an output that cannot be written

Their messages are one line that names the problem and its fix, worded with
the library's own names (``protocol="final"``, ``data_root=``), so that the
command line can print them as they are. Anything else that escapes the
package (a plain ``ValueError``, ``TypeError``, ``RuntimeError`` ...) is a
wrong call of a library function or a bug, and the command line shows its
traceback.

The classes live here, in one leaf module without imports, and are re-exported
where users found them before: :mod:`gsmflow_nflows.data` (``DatasetError``),
:mod:`gsmflow_nflows.training.checkpoint` (``CheckpointError``) and
:mod:`gsmflow_nflows.atomic_write` (``WriteError``).

Example:
    >>> from gsmflow_nflows.errors import ConfigError, GSMFlowError
    >>> try:
    ...     raise ConfigError("training.lr must be > 0, got -1.")
    ... except GSMFlowError as error:
    ...     print(f"Error: {error}")
    Error: training.lr must be > 0, got -1.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DatasetError", "GSMFlowError", "WriteError"]


class GSMFlowError(Exception):
    """The base of every error a user can fix: its message is one line, ready to print.

    Example:
        >>> issubclass(ConfigError, GSMFlowError), issubclass(WriteError, GSMFlowError)
        (True, True)
    """


class ConfigError(GSMFlowError, ValueError):
    """An impossible or unknown setting: a hyperparameter, preset, protocol, precision,
    seed or device.

    It is a ``ValueError`` too: code that caught ``ValueError`` from a config still works.

    Example:
        >>> try:
        ...     raise ConfigError("Unknown preset 'huge'; choose from default, quick.")
        ... except ValueError as error:
        ...     print(type(error).__name__, isinstance(error, GSMFlowError))
        ConfigError True
    """


class DatasetError(GSMFlowError, ValueError):
    """A user-facing data problem: a missing file or key, a malformed array, a failed download.

    The message is one line that names the file (or URL), the problem and the fix.

    Example:
        >>> raise DatasetError("APY/res101.mat: missing key 'labels'; re-download the dataset")
        Traceback (most recent call last):
        ...
        gsmflow_nflows.errors.DatasetError: APY/res101.mat: missing key 'labels'; ...
    """


class CheckpointError(GSMFlowError, ValueError):
    """A checkpoint or model file that cannot be used here (corrupt, foreign or mismatched).

    Example:
        >>> raise CheckpointError("runs/seed0.pt: not a GSMFlow checkpoint; delete it")
        Traceback (most recent call last):
        ...
        gsmflow_nflows.errors.CheckpointError: runs/seed0.pt: not a GSMFlow checkpoint; ...
    """


class WriteError(GSMFlowError, OSError):
    """An output that cannot be written; the message names the file, the reason and a fix.

    Example:
        >>> error = WriteError("cannot write out.json: No space left on device.")
        >>> isinstance(error, OSError), error.reason is None
        (True, True)
    """

    #: The bare reason of a failed write ("No space left on device"), when there is one.
    reason: str | None = None
