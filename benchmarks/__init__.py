"""bincount's speed benchmarks: `python -m benchmarks` runs them all (see benchmarks/run.py)."""
