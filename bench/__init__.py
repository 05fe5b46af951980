"""Load generator and side-by-side baselines; results in BENCHMARKS.md."""
