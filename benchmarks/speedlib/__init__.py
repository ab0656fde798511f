"""The parts of ``benchmarks/speed.py``, the script users run.

* :mod:`.settings`: the sizes and hyperparameters of a run (aPY's, or ``--quick``'s).
* :mod:`.workload`: the synthetic data, both initial models with mapped
  weights, the batches, and the agreement check of the two models.
* :mod:`.timing`: timers, FLOP and memory counting, the matmul peak, the profiler table.
* :mod:`.variants`: what each variant runs: its model, optimizer, step and sampler.
* :mod:`.rounds`: runs every variant's phases in interleaved rounds and isolates failures.
* :mod:`.report`: ratios, the issue's targets, the machine, the table and the JSON.
"""
