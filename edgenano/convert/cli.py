"""`edgenano-convert HF_DIR -o OUT.gguf --outtype TYPE`: the converter's command line."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from .errors import ConversionError, OutputError
from .presets import OUTTYPES
from .writer import convert_checkpoint

EXIT_FAILED = 1  # the output could not be written (read-only directory, full disk, I/O error)
EXIT_USAGE = 2  # user errors, as argparse uses for bad arguments
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended

DESCRIPTION = """\
Convert a Hugging Face Nemotron-H checkpoint (NemotronHForCausalLM: config.json, safetensors,
tokenizer.json) into a GGUF file that llama.cpp and edgenano load as `nemotron_h`.
Tensors are streamed one at a time, so memory stays flat whatever the model size."""

EPILOG = """\
output types:
  f32 f16 bf16 q8_0 q4_0 q5_0   every matrix in that type (norms, conv, A, D, dt bias stay f32)
  q4_k q5_k q6_k                every matrix in that K-quant (rows not divisible by 256 fall
                                back as llama.cpp does: q4_k->q5_0, q5_k->q5_1, q6_k->q8_0)
  q4_k_m q5_k_m                 llama.cpp's mixtures: q6_k for output and some attn_v/ffn_down

examples:
  edgenano-convert ./NVIDIA-Nemotron-Nano-9B-v2 -o nano9b-q4_k_m.gguf --outtype q4_k_m
  edgenano-convert ./ckpt -o out.gguf --outtype q8_0 --dry-run
  edgenano-convert ./Super -o super.gguf --outtype q4_k_m --no-mtp     # without the draft head"""


def build_parser(prog: str = "edgenano-convert") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hf_dir", metavar="HF_DIR", help="Hugging Face checkpoint directory")
    p.add_argument("-o", "--output", metavar="OUT.gguf", required=True, help="GGUF file to write")
    p.add_argument("--outtype", default="f32", type=str.lower, choices=list(OUTTYPES),
                   metavar="TYPE", help=f"output type: {', '.join(OUTTYPES)} (default: f32)")
    p.add_argument("--force", action="store_true", help="overwrite OUT.gguf if it exists")
    p.add_argument("--dry-run", action="store_true",
                   help="list each tensor's GGUF name, type, shape and size; write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    mtp = p.add_mutually_exclusive_group()
    mtp.add_argument("--no-mtp", "--no-nextn", dest="mtp", action="store_const", const="drop",
                     help="leave out the multi-token-prediction (MTP) draft head of models that "
                          "have one (Nemotron 3 Super); by default it is kept after the layers, "
                          "where llama.cpp finds it and edgenano ignores it")
    mtp.add_argument("--mtp", dest="mtp", action="store_const", const="only",
                     help="write only the MTP draft head (and the embeddings, final norm and "
                          "output it shares with the model), as llama.cpp's --mtp: a draft "
                          "model for llama.cpp's speculative decoding, which edgenano cannot run")
    p.set_defaults(mtp="keep")
    return p


def main(argv: list[str] | None = None, prog: str = "edgenano-convert") -> int:
    """Run the converter; returns the exit status (0; 1 when the output cannot be written; 2 for
    bad input; 130 if interrupted, 143 if terminated). Every error is one line on stderr."""
    args = build_parser(prog).parse_args(argv)
    try:
        with _sigterm_unwinds():
            out = convert_checkpoint(args.hf_dir, args.output, args.outtype, force=args.force,
                                     progress=not args.no_progress and sys.stderr.isatty(),
                                     dry_run=args.dry_run, mtp=args.mtp)
    except OutputError as e:
        return _fail(prog, e, EXIT_FAILED)
    except ConversionError as e:
        return _fail(prog, e, EXIT_USAGE)
    except OSError as e:  # reading the checkpoint: permissions, I/O errors
        where = f"{e.filename}: " if e.filename else ""
        return _fail(prog, f"{where}{e.strerror or e}", EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{prog}: terminated; no output written", file=sys.stderr)
        return EXIT_TERMINATED
    if not args.dry_run:
        print(f"wrote {out} ({args.outtype})")
    return 0


def _fail(prog: str, e: object, status: int) -> int:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return status


class _Terminated(BaseException):
    """SIGTERM, raised where the conversion is so that it removes its partial output."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """By default SIGTERM ends Python at once, leaving the partial file; unwind instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
