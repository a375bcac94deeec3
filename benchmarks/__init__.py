"""Benchmarks and test problems: figures, not assertions. Run from the project's root as
``python -m benchmarks.<name>`` (``make bench``, ``make bench-net``)."""
