"""``python -m automl.cli``: what the ``automl`` command runs (worker processes are started so)."""

from automl.cli.main import main

main()
