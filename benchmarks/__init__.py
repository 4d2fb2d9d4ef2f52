"""Throughput and latency benchmark of the photo pipeline (`make bench`; see docs/performance.md)."""
