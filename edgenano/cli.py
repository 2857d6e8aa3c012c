"""The `edgenano` command: one subcommand per job, each a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _cmd_convert(argv: list[str]) -> int:
    from .convert.cli import main

    return main(argv, prog="edgenano convert")


def _cmd_eval(argv: list[str]) -> int:
    from .reasoner.eval import main

    return main(argv)


def _cmd_chat(argv: list[str]) -> int:
    from .chat_cli import chat_main

    return chat_main(argv)


def _cmd_generate(argv: list[str]) -> int:
    from .chat_cli import generate_main

    return generate_main(argv)


def _cmd_bench(argv: list[str]) -> int:
    from .bench import main

    return main(argv)


def _cmd_info(argv: list[str]) -> int:
    from .info import main

    return main(argv)


# name -> (handler, one-line help). Each handler parses its own arguments, so
# `edgenano NAME --help` is the subcommand's full help.
COMMANDS = {
    "chat": (_cmd_chat, "chat with a model: streaming, /think, /no_think, /budget, /save"),
    "generate": (_cmd_generate, "continue a raw prompt"),
    "convert": (_cmd_convert, "convert a Hugging Face Nemotron-H checkpoint to GGUF"),
    "bench": (_cmd_bench, "prefill and decode speed: edgenano against llama.cpp, same file"),
    "info": (_cmd_info, "describe a GGUF: layer pattern, tensor types, session memory"),
    "eval": (_cmd_eval, "accuracy of a GGUF of the built-in reasoner, think on/off/budget"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="edgenano",
        description="Run NVIDIA Nemotron-H hybrid models (Nemotron-Nano-9B-v2) from GGUF files.",
        epilog="commands:\n" + "\n".join(f"  {k:<10} {v[1]}" for k, v in COMMANDS.items())
        + "\n\nRun `edgenano COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgenano {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND",
                        help="one of the commands below")
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1] or ["--help"])
    handler = COMMANDS[argv[0]][0]
    return handler(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
