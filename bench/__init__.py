"""Benchmarks, kept out of the test run; `make bench` runs them all."""
