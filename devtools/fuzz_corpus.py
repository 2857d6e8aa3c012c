"""Corrupted GGUF model and chat-state files: structural mutations of a good file, and a corpus
run that loads each in a child process with a timeout and classifies what happened.

tests/test_fuzz.py draws a few hundred of these mutations in CI (in-process, bounded in time);
this script makes the large corpus (issue 16: >= 2,000 models, >= 300 states):

    python devtools/fuzz_corpus.py --models 2000 --states 300 [--seed 0] [--timeout 20]

Outcomes: `clean` (an EdgenanoError: a typed error saying what is wrong), `other` (any other
exception: a bug), `crash` (the child died of a signal), `hang` (past the timeout), and files
that load: `accepted-same` (logits and tokenization as the good file's: the bytes changed were
unused, e.g. padding or general.name) or `accepted-changed` (the output differs: values no
structural check can see, e.g. a flipped bit inside weight data).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from gguf import GGUFValueType as VT

# ---------------------------------------------------------------------------------------------
# Where things lie in a GGUF


@dataclass
class KVAt:
    key: str
    offset: int  # the key length (u64)
    at_type: int  # value type (u32)
    at_value: int  # the value: a string's length, an array's item type, or the scalar
    is_array: bool
    is_string: bool


@dataclass
class TensorAt:
    name: str
    offset: int  # the name length (u64)
    n_dims: int
    at_dims: int  # ne[0] (u64 each)
    at_type: int  # ggml type (u32)
    at_offset: int  # data offset relative to the data section (u64)
    data_offset: int  # absolute
    nbytes: int


@dataclass
class Layout:
    size: int
    data_offset: int
    alignment: int
    kvs: list[KVAt] = field(default_factory=list)
    tensors: list[TensorAt] = field(default_factory=list)

    @property
    def sections(self) -> dict[str, tuple[int, int]]:
        """Byte ranges: the fixed header, the key/value pairs, the tensor table, the data."""
        kv_end = self.tensors[0].offset if self.tensors else self.data_offset
        return {"header": (0, 24), "kv": (24, kv_end), "table": (kv_end, self.data_offset),
                "data": (self.data_offset, self.size)}


def layout(path: str | Path) -> Layout:
    r = gguf.GGUFReader(path)
    lay = Layout(os.path.getsize(path), int(r.data_offset), int(r.alignment))
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        at_type = f.offset + 8 + len(key.encode())
        lay.kvs.append(KVAt(key, f.offset, at_type, at_type + 4, f.types[0] == VT.ARRAY,
                            f.types[0] == VT.STRING))
    for t in r.tensors:
        n = len(t.shape)
        at_dims = t.field.offset + 8 + len(t.name.encode()) + 4
        lay.tensors.append(TensorAt(t.name, t.field.offset, n, at_dims, at_dims + 8 * n,
                                    at_dims + 8 * n + 4, int(t.data_offset), int(t.n_bytes)))
    return lay


# ---------------------------------------------------------------------------------------------
# Mutations: each edits `b` (a bytearray of the good file) in place or returns new bytes, and
# returns a short description.

HUGE = [2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**64 - 1]


def _put(b: bytearray, at: int, value: int, size: int) -> None:
    b[at:at + size] = (value % (1 << (8 * size))).to_bytes(size, "little")


def _get(b: bytes, at: int, size: int) -> int:
    return int.from_bytes(b[at:at + size], "little")


def _in(lay: Layout, section: str, r: random.Random) -> int:
    lo, hi = lay.sections[section]
    return r.randrange(lo, max(lo + 1, hi))


def _other(r: random.Random, old: int, choices: list[int]) -> int:
    """One of `choices` that is not `old`: a mutation that changes nothing is no mutation."""
    return r.choice([c for c in choices if c != old])


def _where(lay: Layout, at: int) -> str:
    """What byte `at` belongs to: a key/value pair, a tensor's table entry, or padding."""
    kv = [k for k in lay.kvs if k.offset <= at]
    t = [t for t in lay.tensors if t.offset <= at]
    if at >= lay.data_offset:
        t = [t for t in lay.tensors if t.data_offset <= at < t.data_offset + t.nbytes]
        return f"{t[0].name} data" if t else "padding"
    if t:
        end = t[-1].at_offset + 8
        return f"{t[-1].name} entry" if at < end else "padding before the data"
    return kv[-1].key if kv else "header"


def truncate(section):
    def m(b, lay, r):
        cut = _in(lay, section, r)
        del b[cut:]
        return f"truncated at {cut} ({section})"
    return m


def flip(section):
    def m(b, lay, r):
        at, x = _in(lay, section, r), r.randrange(1, 256)
        b[at] ^= x
        return f"byte {at} ({_where(lay, at)}) ^= {x:#x}"
    return m


def count(which):
    at = {"tensors": 8, "kvs": 16}[which]

    def m(b, lay, r):
        old = _get(b, at, 8)
        v = _other(r, old, [0, old - 1, old + 1, old * 2, r.randrange(1 << 16)] + HUGE)
        _put(b, at, v, 8)
        return f"n_{which} {old} -> {v}"
    return m


def kv_length(b, lay, r):
    kv = r.choice(lay.kvs)
    at = r.choice([kv.offset] + ([kv.at_value + 4] if kv.is_array else [])
                  + ([kv.at_value] if kv.is_string else []))
    old = _get(b, at, 8)
    v = _other(r, old, [0, old - 1, old + 1, old * 2] + HUGE)
    _put(b, at, v, 8)
    return f"{kv.key}: length field at {at} {old} -> {v}"


def kv_type(b, lay, r):
    kv = r.choice(lay.kvs)
    at = kv.at_value if kv.is_array and r.random() < 0.5 else kv.at_type
    v = _other(r, _get(b, at, 4), list(range(13)) + [13, 99, 2**31])
    _put(b, at, v, 4)
    return f"{kv.key}: {'item ' if at != kv.at_type else ''}type -> {v}"


def tensor_dim(b, lay, r):
    t = r.choice(lay.tensors)
    i = r.randrange(t.n_dims)
    old = _get(b, t.at_dims + 8 * i, 8)
    v = _other(r, old, [0, 1, old + 1, old - 1, old * 2, old // 2, 32] + HUGE)
    _put(b, t.at_dims + 8 * i, v, 8)
    return f"{t.name}: ne[{i}] {old} -> {v}"


def tensor_n_dims(b, lay, r):
    t = r.choice(lay.tensors)
    v = _other(r, t.n_dims, [0, 1, 2, 3, 4, 5, 8, 255, 2**32 - 1])
    _put(b, t.at_dims - 4, v, 4)
    return f"{t.name}: n_dims {t.n_dims} -> {v}"


def tensor_type(b, lay, r):
    t = r.choice(lay.tensors)
    v = _other(r, _get(b, t.at_type, 4),
               [int(q) for q in gguf.GGMLQuantizationType] + [4, 5, 42, 99, 2**31])
    _put(b, t.at_type, v, 4)
    return f"{t.name}: ggml type -> {v}"


def tensor_offset(b, lay, r):
    t = r.choice(lay.tensors)
    o = r.choice(lay.tensors)
    old = _get(b, t.at_offset, 8)
    rel = o.data_offset - lay.data_offset
    v = _other(r, old, [rel, rel + lay.alignment, old + lay.alignment, old - lay.alignment,
                        old + 1, old + 4, lay.size, r.randrange(lay.size)] + HUGE)
    _put(b, t.at_offset, v, 8)
    return f"{t.name}: offset {old} -> {v}"


def tensor_swap(b, lay, r):
    t, o = r.sample(lay.tensors, 2)
    a, c = _get(b, t.at_offset, 8), _get(b, o.at_offset, 8)
    _put(b, t.at_offset, c, 8)
    _put(b, o.at_offset, a, 8)
    return f"offsets of {t.name} and {o.name} swapped"


def tensor_name(b, lay, r):
    t = r.choice(lay.tensors)
    same = [o for o in lay.tensors if o is not t and len(o.name) == len(t.name)]
    if same and r.random() < 0.7:
        o = r.choice(same)
        b[t.offset + 8:t.offset + 8 + len(t.name)] = o.name.encode()
        return f"{t.name} renamed {o.name} (a duplicate)"
    i = t.offset + 8 + r.randrange(len(t.name))
    b[i] = _other(r, b[i], [0x2E, 0x78, 0xFF, 0x00])
    return f"{t.name}: name byte {i - t.offset - 8} changed"


def data_flip(b, lay, r):
    t = r.choice(lay.tensors)
    at = t.data_offset + r.randrange(max(1, t.nbytes))
    b[at] ^= 1 << r.randrange(8)
    return f"{t.name}: a bit of weight data at {at} flipped"


GGUF_MUTATIONS = {
    **{f"truncate_{s}": truncate(s) for s in ("header", "kv", "table", "data")},
    **{f"flip_{s}": flip(s) for s in ("header", "kv", "table")},
    "count_tensors": count("tensors"), "count_kvs": count("kvs"),
    "kv_length": kv_length, "kv_type": kv_type,
    "tensor_dim": tensor_dim, "tensor_n_dims": tensor_n_dims, "tensor_type": tensor_type,
    "tensor_offset": tensor_offset, "tensor_swap": tensor_swap, "tensor_name": tensor_name,
    "data_flip": data_flip,
}
# Mutations whose result may legitimately load: the bytes they touch carry no structure.
UNCHECKABLE = {"data_flip"}


def mutate(good: bytes, lay: Layout, kind: str, seed: int) -> tuple[bytes, str]:
    b = bytearray(good)
    desc = GGUF_MUTATIONS[kind](b, lay, random.Random(seed))
    return bytes(b), desc


# -- state files: the structural mutations above, and rewrites with wrong values -----------
_K = "edgenano_state."
JSON_DOCS = ["", "{", "[1, 2", "null", "5", '"text"', "[]", "{}", "[{}]", '[{"role": 7}]',
             '[{"role": "user", "content": 5}]', '{"temperature": "hot"}', '{"top_p": 9}',
             '{"thinking_budget": -7}', '{"seed": 1.5}', '{"temperature": NaN}',
             '{"template_kwargs": []}', '{"tools": {"a": 1}}', "[" * 5000 + "]" * 5000,
             '{"grace": true}', '{"thinking": "yes"}']


def rewrite_state(src: Path, dst: Path, r: random.Random) -> str:
    """A state file rewritten with one wrong value (key type, JSON, tokens, tensor dtype/shape,
    a tensor missing or extra); the description says which."""
    rd = gguf.GGUFReader(src)
    keys = {k: (f.contents(), f.types) for k, f in rd.fields.items() if not k.startswith("GGUF.")}
    arrays = {t.name: np.array(t.data) for t in rd.tensors}
    what = r.choice(["messages", "settings", "tokens", "n_tokens", "key_type", "dtype", "shape",
                     "drop", "extra", "kv_type"])
    name = r.choice(sorted(arrays))
    if what in ("messages", "settings"):
        doc = r.choice(JSON_DOCS)
        keys[_K + what] = (doc, [VT.STRING])
        desc = f"{what} = {doc[:30]!r}"
    elif what == "tokens":
        toks = [r.choice([0, 1, 5, 511, 512, 2**31 - 1, -1]) for _ in range(r.randrange(1, 40))]
        keys[_K + "tokens"] = (toks, [VT.ARRAY, VT.INT32])
        keys[_K + "n_tokens"] = (len(toks), [VT.UINT32])
        desc = f"tokens = {toks[:5]}..."
    elif what == "n_tokens":
        v = r.choice([0, 1, 10**6, 2**32 - 1])
        keys[_K + "n_tokens"] = (v, [VT.UINT32])
        desc = f"n_tokens = {v}"
    elif what == "key_type":
        k = r.choice(sorted(set(keys) - {"general.architecture"}))  # the writer sets that one
        v = r.choice([(3, [VT.UINT32]), ("x", [VT.STRING]), ([1, 2], [VT.ARRAY, VT.INT32]),
                      (1.5, [VT.FLOAT32]), (True, [VT.BOOL])])
        keys[k] = v
        desc = f"{k} = {v[0]!r} ({v[1][-1].name})"
    elif what == "dtype":
        dt = [t for t in (np.float16, np.int32, np.int8, np.float32) if t != arrays[name].dtype]
        arrays[name] = arrays[name].astype(r.choice(dt))
        desc = f"{name} as {arrays[name].dtype}"
    elif what == "shape":
        a = arrays[name]
        arrays[name] = a.T.copy() if a.ndim > 1 and r.random() < 0.5 else a.reshape(-1)[:max(
            1, a.size - r.randrange(1, 4))].copy()
        desc = f"{name} shaped {arrays[name].shape}"
    elif what == "drop":
        del arrays[name]
        desc = f"{name} dropped"
    elif what == "extra":
        extra = r.choice(["ssm.99", "k.0", "conv.3", "junk"])
        arrays[extra] = np.zeros((2, 3), np.float32)
        desc = f"extra tensor {extra}"
    else:
        arrays["kv_type"] = np.array([r.choice([0, 8, 99])], np.int32)
        desc = f"kv_type = {arrays['kv_type'][0]}"
    w = gguf.GGUFWriter(dst, "edgenano_state")
    for k, (v, types) in keys.items():
        if k != "general.architecture":
            w.add_key_value(k, v, types[0], types[-1] if types[0] == VT.ARRAY else None)
    for n, a in arrays.items():
        w.add_tensor(n, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return desc


# ---------------------------------------------------------------------------------------------
# The corpus run: a child process loads files one by one and reports a JSON line for each; the
# parent writes the files, times each, and restarts the child after a crash or hang.

PROMPT = [1, 20, 30, 40, 50]
TEXT = "Hello world, 12 + 34 = 46."


def _worker(mode: str, base: str, state: str | None) -> None:
    from edgenano.errors import EdgenanoError
    from edgenano.model import Model
    from edgenano.session import ChatSession

    good = Model(base, n_ctx=128, n_threads=1)
    want = good.eval(good.new_state(), PROMPT)
    want_ids = good.tokenizer.encode(TEXT)
    if mode == "state":
        ref = ChatSession.load(state, good)
    for line in sys.stdin:
        path = line.strip()
        out: dict = {}
        try:
            if mode == "model":
                m = Model(path, n_ctx=128, n_threads=1)
                got = m.eval(m.new_state(), PROMPT)
                same = bool(np.array_equal(got, want)) and m.tokenizer.encode(TEXT) == want_ids
                out = {"class": "accepted-same" if same else "accepted-changed",
                       "finite": bool(np.isfinite(got).all())}
            else:
                s = ChatSession.load(path, good)
                same = s.messages == ref.messages and _same_state(good, s, ref)
                s.send("and", max_tokens=1)
                out = {"class": "accepted-same" if same else "accepted-changed"}
        except EdgenanoError as e:
            out = {"class": "clean", "error": f"{type(e).__name__}: {str(e)[:160]}"}
        except Exception as e:  # noqa: BLE001 - what this run looks for
            out = {"class": "other", "error": f"{type(e).__name__}: {str(e)[:160]}"}
        print(json.dumps(out), flush=True)


def _same_state(model, a, b) -> bool:
    if (a._snap is None) != (b._snap is None):
        return False
    if a._snap is None:
        return True
    x, y = model.export_state(a._snap.state), model.export_state(b._snap.state)
    return a._snap.tokens == b._snap.tokens and x.keys() == y.keys() and all(
        np.array_equal(x[k], y[k]) for k in x)


class _Child:
    def __init__(self, mode: str, base: Path, state: Path | None):
        args = [sys.executable, __file__, "--worker", mode, str(base), str(state or "")]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def run(self, path: Path, timeout: float) -> dict:
        self.p.stdin.write(f"{path}\n")
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not ready:
            self.p.kill()
            self.p.wait()
            return {"class": "hang"}
        line = self.p.stdout.readline()
        if not line:
            code = self.p.wait()
            return {"class": "crash", "error": f"exit {code}"}
        return json.loads(line)

    @property
    def alive(self) -> bool:
        return self.p.poll() is None

    def close(self) -> None:
        if self.alive:
            self.p.stdin.close()
            self.p.wait()


def run_corpus(mode: str, base: Path, n: int, seed: int, timeout: float, workdir: Path,
               state: Path | None = None) -> list[dict]:
    """n corrupted files of `base` (mode "model") or of `state` (mode "state", loaded into
    base's model), each classified; one result dict per file."""
    good = (state if mode == "state" else base).read_bytes()
    lay = layout(state if mode == "state" else base)
    kinds = sorted(GGUF_MUTATIONS) + (["rewrite"] * 6 if mode == "state" else [])
    child, results = None, []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        path = workdir / f"{mode}-{i}.gguf"
        if kind == "rewrite":
            desc = rewrite_state(state, path, random.Random(seed * 100003 + i))
        else:
            data, desc = mutate(good, lay, kind, seed * 100003 + i)
            path.write_bytes(data)
        if child is None or not child.alive:
            child = _Child(mode, base, state)
        t0 = time.perf_counter()
        out = child.run(path, timeout)
        if out["class"] in ("hang", "crash"):
            child = None
        results.append(dict(out, kind=kind, desc=desc, seconds=time.perf_counter() - t0))
        path.unlink()
    if child is not None:
        child.close()
    return results


def summary(results: list[dict]) -> str:
    classes = ["clean", "other", "crash", "hang", "accepted-same", "accepted-changed"]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_kind[r["kind"]][r["class"]] += 1
    total = Counter(r["class"] for r in results)
    head = f"{'mutation':16s}" + "".join(f"{c:>17s}" for c in classes)
    lines = [head] + [f"{k:16s}" + "".join(f"{by_kind[k][c]:17d}" for c in classes)
                      for k in sorted(by_kind)]
    lines.append(f"{'total':16s}" + "".join(f"{total[c]:17d}" for c in classes))
    odd = [r for r in results if r["class"] in ("other", "crash", "hang")
           or (r["class"].startswith("accepted") and r["kind"] not in UNCHECKABLE)]
    for r in odd[:60]:
        lines.append(f"  {r['class']:16s} {r['kind']:14s} {r['desc']}  {r.get('error', '')}")
    return "\n".join(lines)


def _make_base(workdir: Path) -> tuple[Path, Path]:
    """The tiny mix model (f32 and q8_0 variants are alike here: f32) and a chat state of it."""
    from devtools import tiny
    from edgenano.convert import convert_checkpoint
    from edgenano.model import Model

    hf = tiny.make_checkpoint(workdir / "hf", "mix")
    base = convert_checkpoint(hf, workdir / "mix-q8_0.gguf", "q8_0")
    m = Model(base, n_ctx=128, n_threads=1)
    s = m.chat(system="sys", thinking=False, temperature=0.0)
    s.send("remember this", max_tokens=4)
    s.save(workdir / "chat.state.gguf")
    return base, workdir / "chat.state.gguf"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=2000)
    p.add_argument("--states", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per file")
    p.add_argument("--json", help="write every result here")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        base, state = _make_base(work)
        t0 = time.perf_counter()
        res = {"model": run_corpus("model", base, a.models, a.seed, a.timeout, work),
               "state": run_corpus("state", base, a.states, a.seed, a.timeout, work, state)}
    for mode, rs in res.items():
        print(f"\n{mode} files: {len(rs)}\n{summary(rs)}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    bad = sum(r["class"] in ("other", "crash", "hang") for rs in res.values() for r in rs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devtools, as from the root
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4] or None)
    else:
        sys.exit(main())
