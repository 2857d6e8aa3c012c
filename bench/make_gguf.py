"""Random-weight nemotron_h GGUFs with the Nemotron-Nano-9B-v2 layer pattern (or nemotron_h_moe
with Nemotron 3 Nano 30B-A3B's), written straight in the target type (random quantized blocks, no
float copy of the weights), for benchmarks.

    python bench/make_gguf.py 9b-v2/4 q8_0 /tmp/scaled.gguf   # every width / 4, ~0.59 GB
    python bench/make_gguf.py 9b-v2 q4_0 /tmp/full.gguf       # full shapes, ~5.0 GB
    python bench/make_gguf.py nano3-16x f16 /tmp/moe.gguf     # 30B-A3B widths, 16 experts, 11.7 GB
    python bench/make_gguf.py 9b-v2/4 q4_k_m /tmp/s.gguf      # f16, then llama.cpp's quantizer

The presets (q4_k_m, q5_k_m) and `--llama-quantize` go through llama.cpp's own quantizer
(llama-cpp-python's llama_model_quantize) from an f16 file, deleted afterwards: the files users
run. Where llama-cpp-python is not installed (or with --ours) a preset is written directly with
our converter's per-tensor types (edgenano.convert.presets, which tests/test_llamacpp.py holds
equal to llama.cpp's), so it runs the same kernels over the same bytes per type.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from edgenano.layers import (
    BY_LETTER,
    EMBEDDING,
    MATRIX,
    OUTPUT,
    OUTPUT_NORM,
    Dims,
    layer_arrays,
    layer_tensors,
)

PATTERN_9B_V2 = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
PATTERN_NANO3 = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"  # 30B-A3B (SPEC 1.4)


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    ssm_n_head: int
    ssm_head_dim: int
    ssm_n_group: int
    ssm_d_state: int
    n_vocab: int
    ssm_d_conv: int = 4
    pattern: str = PATTERN_9B_V2
    # Mixture of experts: n_ff is the routed experts' width
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_shexp: int = 0
    expert_scale: float = 2.5

    @property
    def arch(self) -> str:
        return "nemotron_h_moe" if self.n_expert else "nemotron_h"

    @property
    def d_inner(self) -> int:
        return self.ssm_n_head * self.ssm_head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ssm_n_group * self.ssm_d_state


# "/4": every width divided by 4 (head, group and vocabulary counts; head widths and N kept),
# the MLP width rounded up to whole 32-value blocks (15680 / 4 = 3920 is not).
SHAPES = {
    "9b-v2": Shape(4480, 15680, 40, 8, 128, 128, 80, 8, 128, 131072),
    "9b-v2/4": Shape(1120, 3936, 10, 2, 128, 32, 80, 2, 128, 32768),
    # Nemotron 3 Nano 30B-A3B's widths with 16 of its 128 routed experts (top-6 as published):
    # 5.9 B parameters instead of 31.6 B, to fit this machine (about 20 GiB of memory).
    "nano3-16x": Shape(2688, 1856, 32, 2, 128, 64, 64, 8, 128, 131072, pattern=PATTERN_NANO3,
                       n_expert=16, n_expert_used=6, n_ff_shexp=3712),
}
# Byte offsets of the f16 scales inside each block, per type.
SCALE_OFFSETS = {QT.Q8_0: [0], QT.Q4_0: [0], QT.Q5_0: [0], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2],
                 QT.Q6_K: [208]}
# A typical code magnitude per type: scales are chosen so a row keeps activations near unit size.
CODE_STD = {QT.Q8_0: 73.0, QT.Q4_0: 4.6, QT.Q5_0: 9.2, QT.Q4_K: 4.6 * 32, QT.Q5_K: 9.2 * 32,
            QT.Q6_K: 18.0 * 64}


def random_matrix(rng, qtype, n_in: int, n_out: int) -> np.ndarray:
    """Raw GGUF rows (n_out, bytes per row) of random codes with sane scales."""
    if qtype in (QT.F32, QT.F16):
        w = (rng.standard_normal((n_out, n_in), dtype=np.float32) / np.sqrt(n_in))
        return w.astype(np.float16 if qtype == QT.F16 else np.float32).view(np.uint8)
    bs, bb = gguf.GGML_QUANT_SIZES[qtype]
    nb = n_in // bs
    data = np.frombuffer(rng.bytes(n_out * nb * bb), np.uint8).reshape(n_out, nb, bb).copy()
    d = np.float16(1.0 / (CODE_STD[qtype] * np.sqrt(n_in)))
    for off in SCALE_OFFSETS[qtype]:
        data[:, :, off:off + 2] = np.frombuffer(d.tobytes(), np.uint8)
    return data.reshape(n_out, nb * bb)


# Values per GGUF name (after blk.{i}.) for the F32 tensors; every matrix is random_matrix's.
F32_VALUES = {
    "ssm_conv1d.weight": lambda rng, shape: rng.standard_normal(shape, dtype=np.float32) * 0.3,
    "ssm_dt.bias": lambda rng, shape: rng.uniform(-3, -1, shape).astype(np.float32),
    "ssm_a": lambda rng, shape: -rng.uniform(1, 16, shape).astype(np.float32),
    "ssm_conv1d.bias": lambda rng, shape: np.zeros(shape, np.float32),
    # a router that spreads tokens over the experts, as a trained one does
    "ffn_gate_inp.weight": lambda rng, shape: (rng.standard_normal(shape, dtype=np.float32)
                                               / np.float32(np.sqrt(shape[-1]))),
    "exp_probs_b.bias": lambda rng, shape: rng.standard_normal(shape, dtype=np.float32) * 0.1,
}


def dims(s: Shape) -> Dims:
    return Dims(n_vocab=s.n_vocab, n_embd=s.n_embd, n_head=s.n_head, n_head_kv=s.n_head_kv,
                head_dim=s.head_dim, n_ff=s.n_ff, ssm_n_head=s.ssm_n_head, ssm_d_inner=s.d_inner,
                ssm_n_group=s.ssm_n_group, ssm_d_state=s.ssm_d_state, ssm_d_conv=s.ssm_d_conv,
                n_expert=s.n_expert, n_ff_shexp=s.n_ff_shexp)


def tensors(s: Shape, rng):
    """(name, ggml shape ne, matrix?, make(type) -> array) in file order, from the layer table;
    arrays made lazily (one in memory at a time)."""
    d = dims(s)

    def item(name: str, t):
        shape = t.shape(d)
        if t.rule == MATRIX:  # stacked experts: their rows one after another
            rows = int(np.prod(shape[:-1]))
            make = lambda tq: random_matrix(rng, tq, shape[-1], rows)  # noqa: E731
        else:
            fill = F32_VALUES.get(t.gguf, lambda rng, shape: np.ones(shape, np.float32))
            make = lambda tq: fill(rng, shape)  # noqa: E731
        return name, shape[::-1], t.rule == MATRIX, make

    yield item(EMBEDDING.gguf, EMBEDDING)
    for i, letter in enumerate(s.pattern):
        for t in layer_tensors(BY_LETTER[letter], d):
            yield item(f"blk.{i}.{t.gguf}", t)
    yield item(OUTPUT_NORM.gguf, OUTPUT_NORM)
    yield item(OUTPUT.gguf, OUTPUT)


def add_metadata(w: gguf.GGUFWriter, s: Shape, ftype: int) -> None:
    a, n = s.arch + ".", len(s.pattern)
    w.add_uint32(a + "block_count", n)
    w.add_uint32(a + "context_length", 131072)
    w.add_uint32(a + "embedding_length", s.n_embd)
    kinds = [BY_LETTER[k] for k in s.pattern]
    for key, vals in layer_arrays(kinds, lambda i: dims(s)).items():
        w.add_array(a + key, vals)
    w.add_uint32(a + "attention.head_count", s.n_head)
    w.add_uint32(a + "attention.key_length", s.head_dim)
    w.add_uint32(a + "attention.value_length", s.head_dim)
    w.add_float32(a + "attention.layer_norm_epsilon", 1e-5)
    w.add_float32(a + "attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32(a + "ssm.conv_kernel", s.ssm_d_conv)
    w.add_uint32(a + "ssm.state_size", s.ssm_d_state)
    w.add_uint32(a + "ssm.group_count", s.ssm_n_group)
    w.add_uint32(a + "ssm.inner_size", s.d_inner)
    w.add_uint32(a + "ssm.time_step_rank", s.ssm_n_head)
    w.add_uint32(a + "vocab_size", s.n_vocab)
    if s.n_expert:  # as edgenano's converter writes them (edgenano.convert.metadata)
        for key, v in (("expert_count", s.n_expert), ("expert_used_count", s.n_expert_used),
                       ("expert_shared_count", 1), ("expert_feed_forward_length", s.n_ff),
                       ("expert_shared_feed_forward_length", s.n_ff_shexp),
                       ("expert_group_count", 1)):
            w.add_uint32(a + key, v)
        w.add_float32(a + "expert_weights_scale", s.expert_scale)
        w.add_bool(a + "expert_weights_norm", True)
    w.add_uint32("general.file_type", ftype)
    w.add_uint32("general.quantization_version", 2)
    add_vocab(w, s.n_vocab)


def add_vocab(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """A placeholder vocabulary llama.cpp accepts: 16 control tokens, 256 byte tokens, fillers."""
    specials = ["<unk>", "<s>", "</s>"] + [f"<SPECIAL_{i}>" for i in range(3, 16)]
    byte_chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + \
        [chr(c) for c in range(174, 256)]
    byte_chars += [chr(256 + i) for i in range(256 - len(byte_chars))]
    fillers = [f"tok{i}" for i in range(n_vocab - len(specials) - 256)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("tekken")
    w.add_token_list(specials + byte_chars + fillers)
    w.add_token_types([3] * len(specials) + [1] * (n_vocab - len(specials)))
    w.add_token_merges([f"{byte_chars[0]} {byte_chars[1]}"])  # llama.cpp needs the key
    w.add_bos_token_id(1)
    w.add_eos_token_id(12)
    w.add_add_bos_token(False)


def tensor_types(s: Shape, outtype: str, items) -> tuple[list, int]:
    """Each tensor's type and the file type: one type for every matrix (the router is F32, as
    the layer table says), or a preset's mixture chosen by our converter's rule."""
    if outtype in ("q4_k_m", "q5_k_m"):
        from edgenano.convert.presets import OUTTYPES, assign_types
        from edgenano.convert.tensors import TensorSpec

        specs = [TensorSpec(name, "", tuple(ne[::-1]), "", matrix,
                            int(name.split(".")[1]) if name.startswith("blk.") else -1)
                 for name, ne, matrix, _ in items]
        out = OUTTYPES[outtype]
        return (assign_types(specs, out, len(s.pattern), n_expert=s.n_expert),
                int(out.ftype))
    qtype = QT[outtype.upper()]
    ftype = {QT.F32: 0, QT.F16: 1, QT.Q4_0: 2, QT.Q8_0: 7, QT.Q5_0: 8, QT.Q4_K: 14, QT.Q5_K: 16,
             QT.Q6_K: 18}[qtype]
    return [qtype if matrix else QT.F32 for _, _, matrix, _ in items], ftype


def write(shape: str, outtype: str, path: str | Path, seed: int = 0, verbose: bool = True) -> Path:
    s = SHAPES[shape]
    rng = np.random.default_rng(seed)
    path = Path(path)
    w = gguf.GGUFWriter(path, s.arch)
    items = list(tensors(s, rng))
    types, ftype = tensor_types(s, outtype, items)
    add_metadata(w, s, ftype)
    for (name, ne, _, _), tq in zip(items, types):
        nb = gguf.quants.quant_shape_to_byte_shape(ne[::-1], tq) if tq != QT.F32 else None
        nbytes = int(np.prod(nb)) if nb is not None else int(np.prod(ne)) * 4
        if tq == QT.F32:
            w.add_tensor_info(name, ne[::-1], np.dtype(np.float32), nbytes)
        else:
            w.add_tensor_info(name, nb, np.dtype(np.uint8), nbytes, raw_dtype=tq)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0 = time.time()
    for (_, _, _, make), tq in zip(items, types):
        w.write_tensor_data(np.ascontiguousarray(make(tq)))
    w.close()
    if verbose:
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.time() - t0:.0f} s")
    return path


# llama_model_quantize's file types (llama.h's LLAMA_FTYPE_MOSTLY_*).
LLAMA_FTYPES = {"q8_0": 7, "q4_0": 2, "q5_0": 8, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18,
                "q4_k_s": 14, "q5_k_s": 16}


def llama_quantize(shape: str, outtype: str, path: str | Path, seed: int = 0,
                   threads: int = 2) -> Path:
    """An f16 file of random weights quantized by llama.cpp's own quantizer into `outtype`."""
    import ctypes

    import llama_cpp

    path = Path(path)
    tmp = path.with_name(path.name + ".f16.tmp")
    try:
        write(shape, "f16", tmp, seed)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread = LLAMA_FTYPES[outtype], threads
        t0 = time.time()
        rc = llama_cpp.llama_model_quantize(str(tmp).encode(), str(path).encode(),
                                            ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize failed ({rc}) for {path}")
        print(f"quantized {path} ({path.stat().st_size / 1e9:.2f} GB) with llama.cpp in "
              f"{time.time() - t0:.0f} s")
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("outtype", choices=["f32", "f16", "q8_0", "q4_0", "q5_0", "q4_k", "q5_k",
                                        "q6_k", "q4_k_m", "q5_k_m"])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llama-quantize", action="store_true",
                    help="write f16, then quantize with llama.cpp's quantizer (presets: by "
                         "default where llama-cpp-python is installed)")
    ap.add_argument("--ours", action="store_true",
                    help="presets: our converter's per-tensor types, never llama.cpp's quantizer")
    a = ap.parse_args()
    preset = a.outtype in ("q4_k_m", "q5_k_m")
    try:
        import llama_cpp  # noqa: F401

        have_llama = True
    except ImportError:
        have_llama = False
    if a.llama_quantize or (preset and have_llama and not a.ours):
        print(f"{a.outtype}: llama.cpp's quantizer (llama-cpp-python)")
        llama_quantize(a.shape, a.outtype, a.out, a.seed)
    else:
        if preset:
            print(f"{a.outtype}: our converter's per-tensor types (random blocks"
                  f"{'' if a.ours else '; llama-cpp-python is not installed'})")
        write(a.shape, a.outtype, a.out, a.seed)


if __name__ == "__main__":
    main()
