"""Benchmark harness: the engine against the transformers and optimum pipelines, on one machine, in one run.

    python -m benchmarks [--quick] [--name NAME]

See README.md, section "Benchmarks".
"""
