"""The command line (typer). Nothing in automl imports this package; it imports the others."""

from automl.cli.main import app, main

__all__ = ["app", "main"]
