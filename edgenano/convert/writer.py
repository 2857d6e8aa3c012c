"""`convert_checkpoint`: plan every tensor from headers, then stream them into a GGUF.

Peak memory is one chunk of rows (CHUNK_BYTES of float32) plus the quantizer's temporaries,
whatever the model size. Output goes to `OUT.edgenano-partial-HOST-PID` next to OUT and is renamed
at the end: an error or interrupt removes it, and a killed run's is removed by the next run.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from . import gguf_file, quants
from .config import HybridConfig, parse_config, read_config_json, with_mtp
from .errors import ConversionError, OutputError
from .metadata import arch_of, model_kvs
from .presets import assign_types, outtype, row_bytes
from .safetensors_io import Checkpoint
from .tensors import TensorSpec, expert_source, load_small, plan_tensors
from .tokenizer import KV, V, tokenizer_kvs

CHUNK_BYTES = 32 << 20  # float32 bytes of rows converted at once


@dataclass(frozen=True)
class PlannedTensor:
    spec: TensorSpec
    type: GGMLQuantizationType
    nbytes: int


@dataclass(frozen=True)
class Plan:
    config: HybridConfig
    checkpoint: Checkpoint
    tensors: list[PlannedTensor]
    kvs: list[KV]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def plan_conversion(hf_dir: str | Path, outtype_name: str = "f32", mtp: str = "keep") -> Plan:
    """Everything about the output that headers can tell: names, shapes, types, sizes, keys.
    `mtp`: the MTP draft head kept, dropped or written alone (config.MTP_MODES)."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a directory")
    out = outtype(outtype_name)
    raw = read_config_json(hf_dir)
    config = with_mtp(parse_config(raw, source=str(hf_dir / "config.json")), mtp,
                      str(hf_dir / "config.json"))
    ckpt = Checkpoint(hf_dir)
    specs = plan_tensors(config, ckpt, mtp_only=mtp == "only")
    types = assign_types(specs, out, config.n_layer + config.n_nextn, config.n_expert)
    tensors = [PlannedTensor(s, t, _nbytes(s, t)) for s, t in zip(specs, types, strict=True)]
    name = raw.get("_name_or_path") or hf_dir.resolve().name
    kvs = ([KV("general.architecture", arch_of(config), V.STRING)] + model_kvs(config, out, name)
           + tokenizer_kvs(hf_dir, config.n_vocab, raw))
    return Plan(config, ckpt, tensors, kvs)


def _nbytes(s: TensorSpec, t: GGMLQuantizationType) -> int:
    rows = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    return rows * row_bytes(t, s.ne[0])


def quantize_rows(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """(rows, ne0) float32 -> (rows, row bytes) uint8 in ggml's encoding of qtype."""
    try:
        return quants.quantize(x, qtype)
    except NotImplementedError as e:  # K-quants without the compiled extension
        raise ConversionError(str(e)) from None


def _chunks(ckpt: Checkpoint, p: PlannedTensor) -> Iterator[np.ndarray]:
    """The tensor's GGUF bytes, a bounded number of rows at a time."""
    s = p.spec
    if not s.matrix:
        yield quantize_rows(load_small(ckpt, s).reshape(-1, s.ne[0]), p.type)
        return
    # Experts: expert by expert, each in chunks of rows, so the peak is one chunk however many
    # experts a layer has (the GGUF's 3-D tensor holds expert x's rows contiguously), whether the
    # checkpoint has a tensor per expert or one 3-D tensor of them all (x's rows from x * n_rows).
    n_rows, width = s.shape[-2:]
    if s.experts:
        parts = [(expert_source(s, x), 0) for x in range(s.experts)]
    else:
        parts = [(s.source, x * n_rows) for x in range(int(np.prod(s.shape[:-2])))]
    step = max(1, CHUNK_BYTES // (4 * width))
    for src, first in parts:
        for r in range(0, n_rows, step):
            yield quantize_rows(ckpt.read_rows(src, first + r, first + min(n_rows, r + step)),
                                p.type)


def write_gguf(plan: Plan, path: Path, progress: bool = False) -> None:
    """Write the whole file at `path` (the caller handles atomicity)."""
    from tqdm import tqdm

    infos = [(t.spec.name, t.spec.ne, int(t.type), t.nbytes) for t in plan.tensors]
    bar = tqdm(total=plan.nbytes, unit="B", unit_scale=True, desc="convert", disable=not progress)
    with open(path, "wb") as f, bar:
        gguf_file.write_preamble(f, plan.kvs, infos)
        for t in plan.tensors:
            written = 0
            for chunk in _chunks(plan.checkpoint, t):
                f.write(np.ascontiguousarray(chunk).data)
                written += chunk.nbytes
                bar.update(chunk.nbytes)
            if written != t.nbytes:
                raise AssertionError(f"{t.spec.name}: wrote {written} bytes, planned {t.nbytes}")
            gguf_file.write_padding(f, t.nbytes)
        f.flush()
        os.fsync(f.fileno())


def format_plan(plan: Plan, out_path: Path) -> str:
    """The --dry-run listing: one line per tensor (name, type, ggml shape, size) and a total."""
    width = max(len(t.spec.name) for t in plan.tensors)
    lines = [f"{'tensor':<{width}}  {'type':<5}  {'shape (ggml ne)':<18}  size"]
    for t in plan.tensors:
        shape = "{" + ", ".join(str(d) for d in t.spec.ne) + "}"
        lines.append(f"{t.spec.name:<{width}}  {t.type.name:<5}  {shape:<18}  "
                     f"{_human(t.nbytes)}")
    lines.append(f"{len(plan.tensors)} tensors, {_human(plan.nbytes)} of tensor data -> "
                 f"{out_path} (dry run: nothing written)")
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def convert_checkpoint(hf_dir: str | Path, out_path: str | Path, outtype: str = "f32", *,
                       force: bool = False, progress: bool = False,
                       dry_run: bool = False, mtp: str = "keep") -> Path:
    """Convert a HF Nemotron-H checkpoint to a GGUF llama.cpp loads as nemotron_h (or, with
    expert layers, nemotron_h_moe). `mtp`: "keep" the MTP draft head after the layers (llama.cpp's
    converter's default), "drop" it (--no-mtp) or write "only" it (--mtp, a draft-model file)."""
    out_path = Path(out_path)
    if not Path(hf_dir).is_dir():
        raise ConversionError(f"{hf_dir} is not a directory")
    if not dry_run:
        _check_output(out_path, force)
    plan = plan_conversion(hf_dir, outtype, mtp)
    if dry_run:
        print(format_plan(plan, out_path))
        return out_path
    remove_stale_partials(out_path)
    tmp = partial_path(out_path, socket.gethostname(), os.getpid())
    try:
        write_gguf(plan, tmp, progress)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. the directory turned read-only: the first error is the one to tell
            pass
        # A write fails without a file name (ENOSPC) or names the temporary; one naming another
        # file is the checkpoint failing to read, and goes up as it is.
        if isinstance(e, OSError) and e.filename in (None, str(tmp)):
            raise OutputError(f"cannot write {out_path}: {_reason(e)}; nothing was written") from e
        raise
    return out_path


def _check_output(out_path: Path, force: bool) -> None:
    if out_path.is_dir():
        raise ConversionError(f"output {out_path} is a directory; give a file name")
    if out_path.exists() and not force:
        raise ConversionError(f"output {out_path} exists; use --force to overwrite it")
    if not out_path.parent.is_dir():
        raise ConversionError(f"output directory {out_path.parent} does not exist")
    # Checked before the plan reads the checkpoint: the write would fail only at the end otherwise
    # (access() also answers EROFS for a read-only mount, root included).
    if not os.access(out_path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out_path}: directory {out_path.parent} is not writable "
                          "(read-only or no permission); choose another output directory")


def _reason(e: OSError) -> str:
    """An OSError's reason in words, with the errno name the user can search for."""
    import errno

    name = errno.errorcode.get(e.errno or 0)
    text = e.strerror or str(e) or type(e).__name__
    if e.errno == errno.ENOSPC:
        text += " (the disk is full: free space, or write elsewhere)"
    return f"{text} [{name}]" if name else text


# -- temporary files ------------------------------------------------------------------------
PARTIAL = ".edgenano-partial-"  # OUT + PARTIAL + HOST-PID: a conversion to OUT still running


def partial_path(out_path: Path, host: str, pid: int) -> Path:
    """Where a conversion writes before the final rename; the name says whose it is."""
    return out_path.with_name(f"{out_path.name}{PARTIAL}{host}-{pid}")


def remove_stale_partials(out_path: Path) -> list[Path]:
    """Remove partial outputs for OUT left by conversions that were killed (SIGKILL, power loss):
    those of this host whose process no longer exists, and the `.OUT.PID.tmp` files of earlier
    versions. Another host's (a shared file system) cannot be judged and is kept."""
    host, removed = socket.gethostname(), []
    try:
        names = os.listdir(out_path.parent)
    except OSError:
        return removed
    for name in names:
        pid = _stale_pid(name, out_path.name, host)
        if pid is None or _alive(pid):
            continue
        try:
            (out_path.parent / name).unlink()
        except OSError:  # not ours to remove after all (permissions), or gone already
            continue
        removed.append(out_path.parent / name)
        print(f"removed {out_path.parent / name}, left by an interrupted conversion (pid {pid})",
              file=sys.stderr)
    return removed


def _stale_pid(name: str, out_name: str, host: str) -> int | None:
    """The pid in `name` if it is one of our temporaries for `out_name` on this host."""
    if name.startswith(out_name + PARTIAL):
        who = name[len(out_name + PARTIAL):]
        h, _, pid = who.rpartition("-")
        return int(pid) if h == host and pid.isdigit() else None
    legacy = f".{out_name}."
    if name.startswith(legacy) and name.endswith(".tmp"):
        pid = name[len(legacy):-len(".tmp")]
        return int(pid) if pid.isdigit() else None
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, another user's
        return True
    except OverflowError:  # no process can have it
        return False
    return True
