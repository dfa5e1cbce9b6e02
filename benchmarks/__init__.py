"""Benchmarks of automl against what users would run instead; see ``benchmarks/README.md``.

Each module answers one question and runs from the repository root as
``python -m benchmarks.<name> [--quick]``; ``harness`` holds what they share. Importing a module
runs nothing: every script does its work in ``main()``.
"""
