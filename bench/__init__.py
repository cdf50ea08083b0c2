"""Benchmarks and simulations of Lastmile (see bench/README.md)."""
