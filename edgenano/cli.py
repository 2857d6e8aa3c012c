"""The `edgenano` command: one subcommand per job, each a thin wrapper over the Python API, and
what they share: -q/-v, opening a model (errors as one line), llama.cpp's log."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

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


def _cmd_serve(argv: list[str]) -> int:
    from .server.cli import serve_main

    return serve_main(argv)


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
    "serve": (_cmd_serve, "OpenAI-compatible HTTP server: cached conversation states, batching"),
    "convert": (_cmd_convert, "convert a Hugging Face Nemotron-H checkpoint to GGUF"),
    "bench": (_cmd_bench, "prefill and decode speed: edgenano against llama.cpp, same file"),
    "info": (_cmd_info, "describe a GGUF: layer pattern, tensor types, session memory"),
    "eval": (_cmd_eval, "accuracy of a GGUF of the built-in reasoner, think on/off/budget"),
}


# -- what the commands that open a model share ----------------------------------------------
def add_output_args(p: argparse.ArgumentParser, quiet: str) -> None:
    """-q (whose help says what it hides here) and -v."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help=quiet)
    g.add_argument("-v", "--verbose", action="store_true",
                   help="show llama.cpp's own log lines (silenced without -v)")


def fail(prog: str, message: str, status: int = 1):
    """Leave with one line on stderr (no traceback)."""
    sys.stdout.flush()
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(status)


def describe_error(e: BaseException) -> str:
    """An exception as one line: OSErrors as 'file: reason', ours as their message."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def quiet_llama_cpp(verbose: bool) -> None:
    from .backends import llama_cpp_log

    llama_cpp_log(verbose)


def open_model(prog: str, path: str | None, *, backend: str, n_ctx: int | None,
               n_threads: int | None, verbose: bool = False, ctx_flag: str | None = "-c/--ctx"):
    """A Model for a command, or exit 1 with one line saying why. A context past the trained one
    is a one-line warning naming `ctx_flag` (None: no warning, e.g. for bench)."""
    import inspect

    from .errors import EdgenanoError
    from .model import Model

    if backend == "llama.cpp":
        quiet_llama_cpp(verbose)
    kw = {"verbose": verbose} if "verbose" in inspect.signature(Model).parameters else {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = Model(path, backend=backend, n_ctx=n_ctx, n_threads=n_threads, **kw)
    except (EdgenanoError, OSError, ImportError, ValueError) as e:
        fail(prog, describe_error(e))
    trained = model.config.n_ctx_train
    over = bool(trained) and model.n_ctx > trained
    if over and ctx_flag:
        name = os.path.basename(model.path)
        sys.stderr.write(f"warning: {ctx_flag} {model.n_ctx} is more than the {trained} tokens "
                         f"{name} was trained on; past {trained} tokens its output may degrade\n")
    for w in caught:  # Model's own warnings, in one line; the trained-context one said above
        if not (over and "trained" in str(w.message)):
            sys.stderr.write(f"warning: {str(w.message).splitlines()[0]}\n")
    return model


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
        parser.parse_args(argv[:1])  # --help/--version exit 0; nothing or a bad name exit 2
    handler = COMMANDS[argv[0]][0]
    try:
        return handler(argv[1:]) or 0
    except KeyboardInterrupt:  # Ctrl-C outside a chat reply: leave quietly, as shells expect
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `edgenano generate ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
