"""Benchmarks for `newsletter send`: see benchmarks/README.md (entry point: `python -m benchmarks.run`)."""
