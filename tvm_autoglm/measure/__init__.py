"""Measuring compiled models: clean-run timing, statistics, per-kernel profiles, shape sweeps.

Split from the lean runtime on purpose: this package may use psutil and
matplotlib, the deployment runtime never does.
"""
