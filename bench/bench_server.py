"""`edgenano serve` against llama.cpp's own `llama-server` and `python -m llama_cpp.server` on the
same GGUF, via the openai client: (1) a 20-turn conversation, tokens prefilled and time per turn;
(2) aggregate decode throughput with 1, 2, 4 and 8 concurrent streams. The servers run as
subprocesses on loopback, measured one at a time.

    python bench/bench_server.py                      # makes the widths/4 Q4_K_M file first
    python bench/bench_server.py --model m.gguf --threads 2 --streams 1,2,4,8

`llama-server` is built from the llama.cpp vendored in llama-cpp-python's sdist by
bench/build_llama_server.sh (for this benchmark only; ~10 min on 2 cores), or given with
--llama-server PATH. It runs with its defaults (continuous batching, its prompt cache and context
checkpoints for recurrent models) and --cache-ram equal to edgenano's --cache-mb.

The default file is the Nemotron-Nano-9B-v2 layer pattern at every width / 4 with random weights
(bench/make_gguf.py), written as f16 with the built-in reasoner's chat template, then quantized to
Q4_K_M by llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize). Its vocabulary is
byte-level: one token per character. Stop tokens are banned (logit_bias) so every reply is its full
length on both servers; histories are fixed text, so both get identical requests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BAN = {"2": -100, "11": -100, "12": -100}  # </s>, <SPECIAL_11>, <SPECIAL_12>: never stop early
CACHE_MB = 2048  # edgenano's --cache-mb and llama-server's --cache-ram


def chat_vocab():
    """make_gguf's vocabulary writer, with the built-in model's chat template."""
    from edgenano.gguf_model import load_gguf
    from edgenano.models import default_model_path

    template = load_gguf(default_model_path()).metadata["tokenizer.chat_template"]

    def vocab(w, n_vocab):
        """make_gguf's placeholder vocabulary (control tokens, bytes, fillers), with its one
        merge's token in the list (edgenano's tokenizer needs it; llama.cpp does not mind) and a
        chat template."""
        specials = ["<unk>", "<s>", "</s>"] + [f"<SPECIAL_{i}>" for i in range(3, 16)]
        chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + \
            [chr(c) for c in range(174, 256)]
        chars += [chr(256 + i) for i in range(256 - len(chars))]
        fillers = [chars[0] + chars[1]] + [f"tok{i}" for i in range(n_vocab - 16 - 256 - 1)]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("tekken")
        w.add_token_list(specials + chars + fillers)
        w.add_token_types([3] * len(specials) + [1] * (n_vocab - len(specials)))
        w.add_token_merges([f"{chars[0]} {chars[1]}"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(12)
        w.add_add_bos_token(False)
        w.add_chat_template(template)

    return vocab


def make_model(dest: Path) -> Path:
    """widths/4 9B-v2 pattern, Q4_K_M by llama.cpp's quantizer, with a chat template."""
    out = dest / "nemotron_h_9b-v2-w4_q4_k_m_chat.gguf"
    if out.exists():
        return out
    import ctypes

    import llama_cpp

    sys.path.insert(0, str(HERE))
    import make_gguf

    make_gguf.add_vocab = chat_vocab()
    dest.mkdir(parents=True, exist_ok=True)
    f16 = dest / "tmp-f16.gguf"
    make_gguf.write("9b-v2/4", "f16", f16)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    t0 = time.time()
    rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(),
                                        ctypes.byref(params))
    f16.unlink()
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc})")
    print(f"quantized to {out} ({out.stat().st_size / 1e6:.0f} MB) in {time.time() - t0:.0f} s")
    return out


def with_chat_vocab(src: Path, dest: Path) -> Path:
    """A copy of a make_gguf file (e.g. the full shapes quantized by llama.cpp) whose placeholder
    vocabulary is replaced by the chat one above: same tensors, byte for byte."""
    import gguf

    out = dest / (src.stem + "-chat.gguf")
    if out.exists():
        return out
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(out) + ".part", arch)
    for key, f in r.fields.items():
        if key.startswith(("GGUF.", "tokenizer.")) or key == "general.architecture":
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    n_vocab = next(t.shape[1] for t in r.tensors if t.name == "token_embd.weight")
    chat_vocab()(w, int(n_vocab))
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)
    w.close()
    os.replace(str(out) + ".part", out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProc:
    def __init__(self, kind: str, model: Path, threads: int, n_ctx: int, parallel: int,
                 logdir: Path, llama_server: str | None = None):
        self.kind, self.port = kind, free_port()
        self.log_path = logdir / f"{kind}.log"
        if kind == "edgenano":
            cmd = [sys.executable, "-m", "edgenano", "serve", str(model), "--port",
                   str(self.port), "-t", str(threads), "-c", str(n_ctx), "--parallel",
                   str(parallel), "--cache-mb", str(CACHE_MB), "--max-queue", "64"]
        elif kind == "llama-server":
            # its context is shared by the slots: n_ctx each, as edgenano's
            cmd = [llama_server or "llama-server", "-m", str(model), "--host", "127.0.0.1",
                   "--port", str(self.port), "-t", str(threads), "-tb", str(threads), "-c",
                   str(n_ctx * parallel), "-np", str(parallel), "-b", "512", "--cache-ram",
                   str(CACHE_MB), "--no-webui"]
        elif kind == "llama_cpp":
            cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--port",
                   str(self.port), "--n_threads", str(threads), "--n_threads_batch",
                   str(threads), "--n_ctx", str(n_ctx), "--n_batch", "512", "--verbose", "True",
                   # its default lets a new request cut off the one streaming: queue them
                   "--interrupt_requests", "False"]
        else:
            raise SystemExit(f"unknown server {kind!r}: edgenano, llama-server or llama_cpp")
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"{kind} server exited: see {self.log_path}")
            time.sleep(0.5)
        raise SystemExit(f"{kind} server did not start")

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.base + "/v1", api_key="x", max_retries=0, timeout=3600)

    def prompt_evals(self) -> list[int]:
        """llama.cpp's 'prompt eval time = ... / N tokens' lines so far (one per request)."""
        self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return [int(n) for n in re.findall(r"prompt eval time\s*=.*?/\s*(\d+) tokens", text)]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def conversation(srv: ServerProc, turns: int, reply_tokens: int) -> list[dict]:
    """Turns of a conversation whose history is fixed text; per turn: prompt tokens, tokens
    prefilled, time to the first token and the whole turn."""
    c = srv.client()
    messages = [{"role": "system", "content": "You are a terse assistant."}]
    rows = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"Turn {i + 1}: note {i * 7 % 13} more."})
        before = srv.prompt_evals() if srv.kind != "edgenano" else None
        t0 = time.perf_counter()
        first = None
        usage = None
        extra = {"logit_bias": BAN}
        if srv.kind in ("edgenano", "llama-server"):
            extra["extra_body"] = {"chat_template_kwargs": {"enable_thinking": False}}
        for ch in c.chat.completions.create(model="m", messages=messages, temperature=0,
                                            max_tokens=reply_tokens, stream=True,
                                            stream_options={"include_usage": True}, **extra):
            if first is None and ch.choices and (ch.choices[0].delta.content or getattr(
                    ch.choices[0].delta, "reasoning_content", None)):
                first = time.perf_counter() - t0
            usage = ch.usage or usage
        total = time.perf_counter() - t0
        if srv.kind == "edgenano":
            cached = usage.prompt_tokens_details.cached_tokens
            prefilled = usage.prompt_tokens - cached
            n_prompt = usage.prompt_tokens
        else:
            time.sleep(0.2)
            new = srv.prompt_evals()[len(before):]
            prefilled = new[0] if new else -1
            n_prompt = usage.prompt_tokens if usage else -1  # (its streams carry no usage)
        rows.append(dict(turn=i + 1, prompt=n_prompt, prefilled=prefilled,
                         ttft=first or total, total=total))
        print(f"  {srv.kind} turn {i + 1}: {rows[-1]}", flush=True)
        messages.append({"role": "assistant", "content": f"Noted {i + 1}."})
    return rows


def throughput(srv: ServerProc, streams: int, tokens: int) -> dict:
    """`streams` completions at once, `tokens` each: aggregate generated tokens per second from
    the first request sent to the last token received, and the decode rate after every stream
    produced its first token."""
    import httpx

    c = srv.client()
    firsts, ends, counts = [0.0] * streams, [0.0] * streams, [0] * streams
    before = httpx.get(srv.base + "/metrics").json()["scheduler"] if srv.kind == "edgenano" \
        else None
    t0 = time.perf_counter()

    def one(k: int):
        n = 0
        for ch in c.completions.create(model="m", prompt=f"Stream {k}: count on.",
                                       max_tokens=tokens, temperature=0, stream=True,
                                       logit_bias=BAN):
            if ch.choices and ch.choices[0].text:
                if n == 0:
                    firsts[k] = time.perf_counter()
                n += 1
        ends[k] = time.perf_counter()
        counts[k] = n

    th = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = max(ends) - t0
    out = dict(streams=streams, tokens=sum(counts), wall=wall, agg_tok_s=sum(counts) / wall)
    if before is not None:  # how many sequences its decode steps took on average
        after = httpx.get(srv.base + "/metrics").json()["scheduler"]
        steps = after["decode_steps"] - before["decode_steps"]
        out["mean_batch"] = (after["decode_tokens"] - before["decode_tokens"]) / max(steps, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a GGUF with a chat template (default: make widths/4 Q4_K_M)")
    ap.add_argument("--model-from", help="a bench/make_gguf.py file (e.g. the full shapes): "
                    "served as a copy with the chat vocabulary")
    ap.add_argument("--dir", default="/tmp/edgenano-bench-server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--reply", type=int, default=8, help="tokens per reply in the conversation")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=48, help="tokens per stream (throughput)")
    ap.add_argument("--servers", default="edgenano,llama-server,llama_cpp")
    ap.add_argument("--llama-server", help="llama-server binary (default: build it with "
                    "bench/build_llama_server.sh)")
    ap.add_argument("--skip", default="", help="conversation and/or throughput")
    ap.add_argument("--reps", type=int, default=3, help="throughput rounds (best of)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    if a.model_from:
        model = with_chat_vocab(Path(a.model_from), d)
    else:
        model = Path(a.model) if a.model else make_model(d)
    streams = [int(s) for s in a.streams.split(",") if s]
    results: dict = {"model": str(model), "threads": a.threads}
    kinds = a.servers.split(",")
    llama_server = a.llama_server
    if "llama-server" in kinds and not llama_server:
        llama_server = subprocess.run(["bash", str(HERE / "build_llama_server.sh")], check=True,
                                      capture_output=True, text=True).stdout.strip()
    # Both servers up at once (idle while the other is measured): throughput rounds alternate
    # between them, best of --reps per level, so a busy moment of a shared machine does not
    # land on one server only.
    servers = {k: ServerProc(k, model, a.threads, a.ctx, max(streams), d, llama_server)
               for k in kinds}
    try:
        if "conversation" not in a.skip:
            for k in kinds:
                results.setdefault(k, {})["conversation"] = conversation(servers[k], a.turns,
                                                                         a.reply)
        if "throughput" not in a.skip:
            for k in kinds:
                throughput(servers[k], 1, 4)  # warm up: page the weights in
                results.setdefault(k, {})["throughput"] = [None] * len(streams)
            for rep in range(a.reps):
                for k in (kinds if rep % 2 == 0 else kinds[::-1]):
                    for i, n in enumerate(streams):
                        r = throughput(servers[k], n, a.tokens)
                        print(f"  rep {rep} {k} {n} streams: {r}", flush=True)
                        best = results[k]["throughput"][i]
                        if best is None or r["agg_tok_s"] > best["agg_tok_s"]:
                            results[k]["throughput"][i] = r
    finally:
        for srv in servers.values():
            srv.stop()
    if all("conversation" in results[k] for k in kinds):
        print("\nper turn: prompt tokens / tokens prefilled / time to first token (s)")
        print("turn " + "".join(f"| {k:^32s}" for k in kinds))
        for i in range(a.turns):
            row = [results[k]["conversation"][i] for k in kinds]
            print(f"{i + 1:4d} " + "".join(
                f"| {r['prompt']:6d} {r['prefilled']:8d} {r['ttft']:8.2f} s      " for r in row))
        for k in kinds:
            conv = results[k]["conversation"]
            print(f"{k}: {sum(r['prefilled'] for r in conv)} tokens prefilled in all, "
                  f"{sum(r['total'] for r in conv):.1f} s")
    if all("throughput" in results[k] for k in kinds):
        print(f"\naggregate decode throughput (tokens/s, all streams together, best of "
              f"{a.reps}; edgenano's mean decode batch in brackets)")
        print("streams " + "".join(f"{k:>16s}" for k in kinds))
        for i, n in enumerate(streams):
            cells = []
            for k in kinds:
                r = results[k]["throughput"][i]
                b = f" [{r['mean_batch']:.1f}]" if "mean_batch" in r else ""
                cells.append(f"{r['agg_tok_s']:8.1f}{b:>8s}")
            print(f"{n:7d} " + "".join(f"{c:>16s}" for c in cells))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    os.sync()


if __name__ == "__main__":
    main()
