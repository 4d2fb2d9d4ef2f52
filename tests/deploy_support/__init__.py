"""Offline stand-ins for deploy tooling: kustomize, Dockerfile parsing, CLI-path checks."""
