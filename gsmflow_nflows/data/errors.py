"""The one exception type the data layer raises for problems a user can fix."""


class DatasetError(ValueError):
    """A user-facing data problem: a missing file or key, a malformed array, a failed download.

    The message is one line that names the file (or URL), the problem and the fix, so that the
    command line can print it as is.

    Example:
        >>> raise DatasetError("APY/res101.mat: missing key 'labels'; re-download the dataset")
        Traceback (most recent call last):
        ...
        gsmflow_nflows.data.errors.DatasetError: APY/res101.mat: missing key 'labels'; ...
    """


class DatasetWarning(UserWarning):
    """Data that loads but is degenerate (e.g. identical class vectors): one line, like errors.

    Example:
        >>> import warnings
        >>> warnings.simplefilter("error", DatasetWarning)  # doctest: +SKIP
    """
