"""Benchmarks (not tests): scripts that measure the serving goals and print ratios from one run. ``gen3d-bench``
runs them all (`make bench`)."""
