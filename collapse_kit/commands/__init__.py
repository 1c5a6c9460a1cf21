"""Sub-commands of the `collapse-kit` CLI.

Each module here exposes ``register(subparsers)``, which adds its parser(s) and sets
``func=<callable(args) -> int>`` as the parser default. ``collapse_kit.cli`` imports the modules
listed in ``COMMAND_MODULES`` and owns error handling: a command raises ValueError, TypeError,
OSError (FileNotFoundError, ...) or ``UserError`` with a one-line message naming the problem and
the fix; the CLI prints it as one line and exits non-zero (traceback only with ``--debug``).
"""
COMMAND_MODULES = [
    "collapse_kit.commands.train",      # train, evaluate, data stats (adrec side)
    "collapse_kit.commands.analyze",    # analyze, compare
    "collapse_kit.commands.probe",      # probe, probe-compare
    "collapse_kit.commands.figures",    # tsne, plot-spectrum
    "collapse_kit.commands.reproduce",  # quickstart, reproduce
    "collapse_kit.commands.export",     # export
]
