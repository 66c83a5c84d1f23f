"""The SynthCity benchmark: ``jobs`` (what a run is) → ``scores`` (score a finished run) →
``report`` (tables, plots) → ``suites`` (which runs, the ``python -m dida.bench`` command) →
``ship`` (finished runs as the app's shipped checkpoints, ``python -m dida.bench.ship``)."""
