"""Shared test configuration: the repository root on sys.path for ``tests.*`` imports."""
