"""The chat template of the GGUFs edgenano writes must work in llama.cpp's own server, whose
template engine is not Python's jinja2: it has no string escapes such as '\\x00' and no
str.rfind (both were in our template once, and `llama-server` refused every file of ours).

With a `llama-server` binary (EDGENANO_LLAMA_SERVER, or the one bench/build_llama_server.sh
builds) the built-in model is served and its /apply-template output must equal our rendering,
conversation by conversation. Without one only the constructs it is known to refuse are looked
for (CI builds no llama-server)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from edgenano.models import cache_dir, chat_template, default_model_path
from edgenano.template import render

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be terse /no_think"}, {"role": "user", "content": "2+2?"}],
    [{"role": "system", "content": "sys /think"},
     {"role": "user", "content": "a </think> b /no_think then /think"},
     {"role": "assistant", "content": "<think>r</think> answer"},
     {"role": "user", "content": "again /no_think"}],
    [{"role": "user", "content": "call it"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
     {"role": "tool", "content": "{\"y\": 2}"}],
]


def test_template_avoids_what_llama_cpp_refuses():
    t = chat_template()
    assert not re.search(r"\\[xu0-7]", t), "string escapes: llama.cpp's lexer refuses them"
    assert ".rfind(" not in t and ".find(" not in t, "llama.cpp's engine has no str.(r)find"


def _llama_server() -> str | None:
    exe = os.environ.get("EDGENANO_LLAMA_SERVER")
    if exe:
        return exe
    built = cache_dir() / "llama-server-0.3.36" / "build" / "bin" / "llama-server"
    return str(built) if built.is_file() else None


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_llama_server_renders_our_template_as_we_do(tmp_path: Path):
    exe = _llama_server()
    if exe is None:
        pytest.skip("no llama-server (EDGENANO_LLAMA_SERVER, or bench/build_llama_server.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "llama-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([exe, "-m", str(default_model_path()), "--host", "127.0.0.1",
                             "--port", str(port), "-t", "1", "-c", "512", "--no-webui"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                log.flush()
                pytest.fail("llama-server exited:\n" + (tmp_path / "llama-server.log").read_text())
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("llama-server did not start")
                time.sleep(0.3)
        for msgs in CONVERSATIONS:
            for thinking in (True, False):
                got = _post(base + "/apply-template", {
                    "messages": msgs, "chat_template_kwargs": {"enable_thinking": thinking}})
                want = render(chat_template(), msgs, add_generation_prompt=True,
                              enable_thinking=thinking)
                assert got["prompt"] == want, (msgs, thinking)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
