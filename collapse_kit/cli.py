"""The `collapse-kit` command line: the composition root of adrec, collapse_kit and probes.

Every sub-command lives in ``collapse_kit/commands/<name>.py``. This module only builds the parser
and turns exceptions raised for bad input into one clear line and a non-zero exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from collapse_kit import __version__
from collapse_kit.commands import COMMAND_MODULES

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
# Exceptions that mean bad input (a file, flag, value or shape): one line, exit 2. Anything else
# is a bug of collapse-kit: "internal error (please report)", exit 1.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI's one-line error format instead of a usage block."""

    def error(self, message: str):
        print(f"collapse-kit: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="collapse-kit",
        description="Train ADRec and baselines, and measure item-embedding collapse.",
    )
    parser.add_argument("--version", action="version", version=f"collapse-kit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command is not part of this build
                continue
            if exc.name and exc.name.split(".")[0] in ("adrec", "collapse_kit", "probes"):
                raise
            # a third-party package is missing: the other commands still work
            _register_missing(sub, name, exc.name)
            continue
        module.register(sub)
    return parser


def _register_missing(sub, module_name: str, package: str) -> None:
    """Commands of ``module_name`` become stubs that explain which package to install."""
    commands = {"collapse_kit.commands.figures": ("tsne", "plot-spectrum"),
                "collapse_kit.commands.probe": ("probe",),
                "collapse_kit.commands.analyze": ("analyze", "compare"),
                "collapse_kit.commands.reproduce": ("quickstart", "reproduce")}
    for cmd in commands.get(module_name, ()):
        p = sub.add_parser(cmd, help=f"(unavailable: needs the {package} package)")
        p.add_argument("rest", nargs=argparse.REMAINDER)

        def fail(args, _package=package, _cmd=cmd):
            raise ModuleNotFoundError(f"`collapse-kit {_cmd}` needs the Python package "
                                      f"{_package!r}; install it with `pip install {_package}`")

        p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug may be given after the sub-command too; it only controls error reporting.
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("collapse-kit: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"collapse-kit: error: {error_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        if debug:
            traceback.print_exc()
        print("collapse-kit: error: out of memory; try a smaller input or fewer at a time "
              "(e.g. --set micro_batch=32)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, not the user's input
        if debug:
            traceback.print_exc()
        print(f"collapse-kit: internal error (please report, with --debug for the traceback): "
              f"{type(exc).__name__}: {error_message(exc)}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def error_message(exc: BaseException) -> str:
    """One line describing ``exc`` for the user (no traceback)."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
