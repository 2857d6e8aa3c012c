"""The `edgenano` command: one subcommand per job, each a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _cmd_convert(argv: list[str]) -> int:
    from .convert.cli import main

    return main(argv)


def _cmd_eval(argv: list[str]) -> int:
    from .reasoner.eval import main

    return main(argv)


def _cmd_info(argv: list[str]) -> int:
    from .info import main

    return main(argv)


# name -> (handler, one-line help). Each handler parses its own arguments, so
# `edgenano NAME --help` is the subcommand's full help.
COMMANDS = {
    "convert": (_cmd_convert, "convert a Hugging Face Nemotron-H checkpoint to GGUF"),
    "info": (_cmd_info, "describe a GGUF: layer pattern, tensor types, session memory"),
    "eval": (_cmd_eval, "accuracy of a GGUF of the built-in reasoner, think on/off/budget"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="edgenano",
        description="Run NVIDIA Nemotron-H hybrid models (Nemotron-Nano-9B-v2) from GGUF files.",
        epilog="Run `edgenano COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"edgenano {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND",
                        help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1] or ["--help"])
    handler = COMMANDS[argv[0]][0]
    return handler(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
