"""The `mindsight` command: one entry point that starts every process."""

__version__ = "0.1.0"
