"""Benchmarks of rlhf_lite: `python -m bench` runs the CPU ones (see bench/__main__.py)."""
