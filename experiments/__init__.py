"""One-off measurements behind the engine's design choices (levers, int8 forms, kernels): run by hand with
`python -m experiments.NAME`, never by CI or the package. The maintained harness is benchmarks/."""
