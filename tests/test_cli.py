"""The `edgenano` command: help, info, and a chat scripted through a pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args, stdin: str | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "edgenano.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gguf_path(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("cli") / "mix.gguf"
    convert_checkpoint(tiny_checkpoint("mix"), out, "f32")
    return out


def test_help_lists_commands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("chat", "generate", "convert", "info", "eval", "bench"):
        assert f"  {cmd}" in r.stdout
    assert _run("chat", "--help").returncode == 0
    assert _run("nonsense").returncode == 2


def test_info(gguf_path):
    r = _run("info", str(gguf_path), "--ctx", "1024")
    assert r.returncode == 0, r.stderr
    assert "pattern       M-M*-M-" in r.stdout and "session @ 1024 tokens" in r.stdout
    bad = _run("info", str(gguf_path) + ".missing")
    assert bad.returncode == 2 and "error" in bad.stderr and "Traceback" not in bad.stderr


def test_chat_scripted(gguf_path, tmp_path):
    state = tmp_path / "s.gguf"
    script = f"hello\n/no_think\nagain\n/budget 3\n/think\nthird\n/save {state}\n/load {state}\n"
    r = _run("chat", str(gguf_path), "--backend", "reference", "-n", "8", "--grace", "1",
             stdin=script)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.count("[reasoning]") == 2  # turns 1 and 3; turn 2 has reasoning off
    assert "reasoning off" in out and "thinking budget 3" in out
    assert "4 reasoning" in out  # budget 3 + grace 1: the forced close at token 4
    assert f"saved to {state}" in out and "loaded" in out


def test_bench_compares_backends(gguf_path):
    r = _run("bench", str(gguf_path), "--backends", "native,reference", "-p", "40", "-n", "4",
             "--reps", "1", "-t", "2")
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines()[2:]}
    assert set(rows) == {"native", "reference"}
    assert rows["reference"][3:] == ["1.00x", "1.00x"]  # the last backend is the baseline
    assert all(float(v) > 0 for v in rows["native"][1:3])
