"""The lecture's claims as reproducible experiments: one module per claim, one command each.

``stridenet experiment NAME`` runs one of ``EXPERIMENTS`` and writes ``results.csv``, ``results.md``
and ``plot.png`` into ``OUT/NAME/``. This package imports nothing heavy at import time, so the
command line can list the experiments without loading NumPy; ``run_experiment`` loads the module.

Typical use::

    from stridenet.experiments import ExperimentConfig, run_experiment

    outcome = run_experiment("stack-vs-large", ExperimentConfig(dataset="mnist-sample", epochs=1))
    print(outcome.markdown)
"""

from stridenet.experiments.registry import EXPERIMENTS, ExperimentConfig, experiment_module, run_experiment

__all__ = ["EXPERIMENTS", "ExperimentConfig", "experiment_module", "run_experiment"]
