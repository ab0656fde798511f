"""``gsmflow sweep`` and ``gsmflow table`` on Ray Tune (the optional ``sweep`` extra).

* :mod:`~gsmflow_nflows.sweep.space`: search-space files, checked without Ray;
* :mod:`~gsmflow_nflows.sweep.objective`: a trial, trained and scored on the validation split;
* :mod:`~gsmflow_nflows.sweep.run`: the sweep (search, selection, final test runs);
* :mod:`~gsmflow_nflows.sweep.grid`: ``gsmflow table``, datasets x presets x protocols x seeds;
* :mod:`~gsmflow_nflows.sweep.protocol_trials`: the one-seed protocol trials of both;
* :mod:`~gsmflow_nflows.sweep.experiment`: one Tune experiment, fresh or resumed;
* :mod:`~gsmflow_nflows.sweep.adapter`: every call into the trainer, protocols and bench;
* :mod:`~gsmflow_nflows.sweep.tune_api`: the only module that imports Ray, when called.

Importing this package (or any module above) does not import Ray.
"""
