"""The `edgenano` command: help, info, bench, generate, and chat driven as a user would, through a
pipe and through a terminal (a pseudo-terminal: Ctrl-C there is a real SIGINT)."""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from edgenano.chat_cli import COMMANDS, INTERRUPTED, PROMPT_HINT, _Printer, parse_line

STATS = re.compile(r"^\[(\d+) tokens, (\d+) reasoning, (\w+)\]$", re.M)
# Greedy on the tiny random model: this message gets a reply of thousands of tokens (seconds on
# the reference backend), so a Ctrl-C after its first token lands mid-reply; SHORT's is short.
LONG, SHORT = "What is 3 + 4?", "a"
SLOW = ("--backend", "reference", "--temp", "0", "-n", "3000", "-c", "4096")


def _run(*args, stdin: str | None = None, timeout: int = 300, cwd=None, module="edgenano.cli"):
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gguf_path(tiny_checkpoint, tmp_path_factory):
    from edgenano.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("cli") / "mix.gguf"
    convert_checkpoint(tiny_checkpoint("mix"), out, "f32")
    return out


@pytest.fixture(scope="module")
def short_reply_stats(gguf_path):
    """The stats line of SHORT's reply as the first turn of a fresh session."""
    r = _run("chat", str(gguf_path), *SLOW, stdin=SHORT + "\n")
    assert r.returncode == 0, r.stderr
    return STATS.search(r.stdout).group(0)


# -- the command and its help ----------------------------------------------------------------
def test_help_lists_commands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("chat", "generate", "convert", "info", "eval", "bench"):
        assert f"  {cmd}" in r.stdout
    assert _run("chat", "--help").returncode == 0
    assert _run("nonsense").returncode == 2


def test_bare_command_is_a_usage_error_and_python_m_works():
    r = _run()
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("usage: edgenano") and "required: COMMAND" in r.stderr
    m = _run("--help", module="edgenano")
    assert m.returncode == 0 and m.stdout.startswith("usage: edgenano")


def test_generate_help_states_its_real_defaults(gguf_path):
    gen, chat = _run("generate", "--help").stdout, _run("chat", "--help").stdout
    flat = " ".join(gen.split())
    assert "temperature (default: 0 = greedy)" in flat
    assert "nucleus sampling (default: 1.0 = off)" in flat
    assert "0.6" not in flat and "0.95" not in flat
    assert "0.6 with reasoning on" in " ".join(chat.split())
    # ... and they are the defaults: without --temp two seeds give the greedy text
    outs = {_run("generate", str(gguf_path), "--backend", "reference", "-p", "hello", "-n", "12",
                 *extra).stdout for extra in (("--seed", "1"), ("--seed", "2"), ("--temp", "0"))}
    assert len(outs) == 1
    sampled = _run("generate", str(gguf_path), "--backend", "reference", "-p", "hello", "-n",
                   "12", "--temp", "5", "--seed", "1")
    assert sampled.stdout not in outs  # the check above could fail


def test_generate_errors_and_warnings_are_one_line(gguf_path):
    r = _run("generate", str(gguf_path), "--backend", "reference", "-p", "hi " * 40, "-c", "16")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()] and "-c/--ctx" in r.stderr
    w = _run("generate", str(gguf_path), "--backend", "reference", "-p", "hi", "-n", "2",
             "-c", "8192", "-q")
    assert w.returncode == 0, w.stderr
    assert w.stderr.splitlines() == ["warning: -c/--ctx 8192 is more than the 4096 tokens "
                                     "mix.gguf was trained on; past 4096 tokens its output may "
                                     "degrade"]
    missing = _run("chat", str(gguf_path) + ".missing")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr
    assert _run("chat", str(gguf_path), "-c", "0").returncode == 2


def test_llama_cpp_log_only_with_verbose(gguf_path):
    pytest.importorskip("llama_cpp")
    args = ("generate", str(gguf_path), "--backend", "llama.cpp", "-p", "hi", "-n", "2")
    quiet, verbose = _run(*args), _run(*args, "-v")
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr
    assert re.fullmatch(r"\[2 tokens in [\d.]+ s\]\n", quiet.stderr)  # llama.cpp said nothing
    assert "llama_model_loader" in verbose.stderr and "llama_kv_cache" in verbose.stderr


def test_info(gguf_path):
    r = _run("info", str(gguf_path), "--ctx", "1024")
    assert r.returncode == 0, r.stderr
    assert "pattern       M-M*-M-" in r.stdout and "session @ 1024 tokens" in r.stdout
    bad = _run("info", str(gguf_path) + ".missing")
    assert bad.returncode == 2 and "error" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_compares_backends(gguf_path):
    r = _run("bench", str(gguf_path), "--backends", "native,reference", "-p", "40", "-n", "4",
             "--reps", "1", "-t", "2")
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines()[2:]}
    assert set(rows) == {"native", "reference"}
    assert rows["reference"][3:] == ["1.00x", "1.00x"]  # the last backend is the baseline
    assert all(float(v) > 0 for v in rows["native"][1:3])
    assert "bench: round 1/1: native" in r.stderr.splitlines()  # progress, off stdout
    q = _run("bench", str(gguf_path), "--backends", "reference", "-p", "8", "-n", "2",
             "--reps", "1", "-q")
    assert q.returncode == 0 and q.stderr == "" and "reference" in q.stdout


# -- chat, scripted through a pipe -------------------------------------------------------------
def test_parse_line():
    assert parse_line("/think") == ("command", "/think", "")
    assert parse_line("  /no_think ") == ("command", "/no_think", "")
    assert parse_line("/no_think What is 40 - 13?") == ("message", "/no_think What is 40 - 13?",
                                                        "")
    assert parse_line("/budget 3") == ("command", "/budget", "3")
    assert parse_line("/foo bar") == ("unknown", "/foo", "")
    assert parse_line("//etc/hosts is a file") == ("message", "/etc/hosts is a file", "")
    assert parse_line("hello /think") == ("message", "hello /think", "")


def test_printer_never_prints_blank_lines_around_a_part():
    out = io.StringIO()
    show = _Printer(out, color=False)
    for text, reasoning in [("\n", True), ("Let me", True), (" add.\n\n", True),
                            ("\n\n", False), ("27", False), (".\n", False)]:
        show(text, reasoning)
    show.end()
    assert out.getvalue() == "[reasoning] Let me add.\n[answer] 27.\n"
    out = io.StringIO()
    show = _Printer(out, color=False)
    for text in ("\n", "\n\n", "The answer", "\n\n", "is 27."):  # reasoning off: answer only
        show(text, False)
    show.end()
    assert out.getvalue() == "The answer\n\nis 27.\n"


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


def _turns(stdout: str) -> dict[str, str]:
    """Each piped line (echoed as '> line') -> what the chat printed until the next one."""
    parts = re.split(r"^> (.*)$", stdout, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_quiet_chat_prints_only_the_replies(gguf_path):
    r = _run("chat", str(gguf_path), "--backend", "reference", "-n", "4", "-q", "--no-think",
             "--seed", "0", stdin="hello\n/budget 2\n")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.endswith("\nthinking budget 2 (reasoning is off: /think turns it on)\n")
    assert not STATS.search(r.stdout) and not re.search("^> ", r.stdout, re.M)


def test_chat_commands_switches_and_refusals(gguf_path, tmp_path):
    script = ("/no_think What is 40 - 13?\n"   # a message with a switch: sent, reasoning off
              "/foo bar\n"                      # unknown: refused, not sent
              "//foo bar\n"                     # the escape: sent as '/foo bar'
              "/reset\n/save\n/load\n/load missing.gguf\n/budget x\n/reset now\n"
              "/think\nhello\n")
    r = _run("chat", str(gguf_path), "--backend", "reference", "-n", "6", "--seed", "0",
             stdin=script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    turns = _turns(r.stdout)
    switched = turns["/no_think What is 40 - 13?"]
    assert "[reasoning]" not in switched and STATS.search(switched).group(2) == "0"
    assert turns["/foo bar"] == "\n" and turns["//foo bar"].count("[reasoning]") == 0
    assert STATS.search(turns["//foo bar"])  # sent: the switch in turn 1 still holds
    assert "[reasoning]" in turns["hello"]  # /think turned it back on
    assert len(STATS.findall(r.stdout)) == 3
    err = r.stderr.splitlines()
    assert err[0].startswith("error: unknown command /foo: /help")
    saved = [p.name for p in tmp_path.iterdir()]
    assert len(saved) == 1 and re.fullmatch(r"edgenano-chat-\d{8}-\d{6}\.gguf", saved[0])
    assert f"saved to {saved[0]}" in turns["/save"]
    assert err[1].startswith("usage: /load PATH")
    assert err[2] == "error: cannot load missing.gguf: no such state file"
    assert err[3].startswith("usage: /budget N") and err[4].startswith("usage: /reset")
    assert len(err) == 5


def test_reset_keeps_settings_and_forgets_the_conversation(gguf_path, tmp_path):
    script = (f"/no_think\n/budget 5\nhello\n/reset\n/save {tmp_path / 'a.gguf'}\n"
              f"/load {tmp_path / 'a.gguf'}\nagain\n")
    r = _run("chat", str(gguf_path), "--backend", "reference", "-n", "6", "-s", "Be brief.",
             stdin=script)
    assert r.returncode == 0, r.stderr
    turns = _turns(r.stdout)
    assert "(1 messages)" in turns[f"/load {tmp_path / 'a.gguf'}"]  # the system prompt only
    assert "[reasoning]" not in turns["again"] and STATS.search(turns["again"])


def test_help_matches_the_commands(gguf_path, tmp_path):
    r = _run("chat", str(gguf_path), "--backend", "reference", "-n", "2", stdin="/help\n")
    listed = re.findall(r"^  (/\w+)", r.stdout, flags=re.M)
    assert sorted(listed) == sorted(COMMANDS)
    # every command listed runs (none is refused as unknown), and one that is not is refused
    runs = {"/budget": "/budget 4", "/save": f"/save {tmp_path / 'h.gguf'}",
            "/load": f"/load {tmp_path / 'h.gguf'}"}
    order = [c for c in listed if c not in ("/quit", "/exit")] + ["/nonsense"]
    for last in ("/quit", "/exit"):
        script = "\n".join(runs.get(c, c) for c in order) + f"\n{last}\nhello\n"
        r = _run("chat", str(gguf_path), "--backend", "reference", "-n", "2", stdin=script)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("unknown command") == 1 and "/nonsense" in r.stderr
        assert "> hello" not in r.stdout  # it left before
    assert _run("chat", "--help").stdout.count("/save [PATH]") == 1


def test_chat_context_overflow_is_one_line_and_the_chat_goes_on(gguf_path):
    r = _run("chat", str(gguf_path), "--backend", "reference", "-c", "48", "-n", "4",
             stdin="word " * 60 + "\nhi\n")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert "/reset" in r.stderr and "-c/--ctx" in r.stderr and "48 tokens" in r.stderr
    assert len(STATS.findall(r.stdout)) == 1  # 'hi' was answered


# -- Ctrl-C: real SIGINTs ----------------------------------------------------------------------
class _Reader:
    """Collects a child's output from a file descriptor until a pattern shows up."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""

    def expect(self, pattern: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while not re.search(pattern, self.text, re.S):
            r, _, _ = select.select([self.fd], [], [], max(0.0, end - time.monotonic()))
            try:
                data = os.read(self.fd, 65536) if r else b""
            except OSError:  # a pty's master reads EIO once the child has gone
                data = b""
            if not data:
                raise AssertionError(f"no {pattern!r} in {self.text[-600:]!r}")
            self.buf += data
        return self.text

    @property
    def text(self) -> str:  # without colours and carriage returns
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", self.buf.decode("utf-8", "replace"))

    def rest(self) -> str:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # a pty's master reads EIO once the child has gone
                break
            if not data:
                break
            self.buf += data
        return self.text


def _ctrl_c_at_prompt(term: _Reader, fd: int) -> None:
    """Ctrl-C at the prompt, pressed again if the first one fell in the instant between the
    prompt being drawn and readline waiting (Python's readline loses a SIGINT there, which a
    loaded machine makes likely; a user just presses again)."""
    for _ in range(5):
        os.write(fd, b"\x03")
        try:
            term.expect(re.escape(PROMPT_HINT) + r"\n> $", timeout=6)
            return
        except AssertionError:
            continue
    raise AssertionError(f"Ctrl-C at the prompt was never answered: {term.text[-300:]!r}")


def test_ctrl_c_in_a_terminal(gguf_path, tmp_path, short_reply_stats):
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: a chat whose terminal is the pty, as in a shell
        os.chdir(tmp_path)
        os.execvpe(sys.executable, [sys.executable, "-m", "edgenano", "chat", str(gguf_path),
                                    *SLOW], dict(os.environ, TERM="xterm"))
    term, status = _Reader(fd), None
    try:
        term.expect(r"Ctrl-D to leave\.\n> $")
        os.write(fd, f"{LONG}\r".encode())
        term.expect(r"\[reasoning\] .")
        os.write(fd, b"\x03")  # Ctrl-C while the reply streams
        out = term.expect(re.escape(INTERRUPTED) + r"\n> $")
        assert not STATS.search(out), "the long reply ended before Ctrl-C"
        _ctrl_c_at_prompt(term, fd)  # asked again
        os.write(fd, f"{SHORT}\r".encode())
        out = term.expect(r"\n\[\d+ tokens[^\n]*\n> $")
        # the dropped turn left nothing behind: the reply is that of a fresh session's first turn
        assert STATS.findall(out) and STATS.search(out).group(0) == short_reply_stats
        os.write(fd, b"/save s.gguf\r")
        term.expect(r"saved to s.gguf\n> $")
        os.write(fd, b"/load s.gguf\r")
        term.expect(r"loaded s.gguf \(2 messages\)\n> $")  # SHORT and its reply, not LONG
        os.write(fd, b"\x04")  # Ctrl-D
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    out = term.rest()
    assert out.endswith("> \n") and "Traceback" not in out
    os.close(fd)


def test_ctrl_c_through_a_pipe(gguf_path, short_reply_stats):
    p = subprocess.Popen([sys.executable, "-m", "edgenano", "chat", str(gguf_path), *SLOW],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = _Reader(p.stdout.fileno())
    try:
        p.stdin.write(f"{LONG}\n".encode())
        p.stdin.flush()
        out.expect(r"\[reasoning\] .")
        p.send_signal(signal.SIGINT)
        assert not STATS.search(out.expect(re.escape(INTERRUPTED) + r"\n$"))
        time.sleep(0.3)  # back at the prompt, waiting for a line
        p.send_signal(signal.SIGINT)
        out.expect(re.escape(PROMPT_HINT) + r"\n$")
        p.stdin.write(f"{SHORT}\n".encode())
        p.stdin.close()  # end of input after it: the chat leaves with status 0
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
    text = out.rest()
    assert [m.group(0) for m in STATS.finditer(text)] == [short_reply_stats]
    assert p.stderr.read() == b""


def test_chat_main_in_process_drops_an_interrupted_turn():
    """The loop itself, without a model: a stream that raises KeyboardInterrupt mid-reply."""
    from edgenano.chat_cli import _Chat

    class Session:
        thinking, thinking_budget, grace, messages = True, -1, 500, []

        def send(self, text, stream, max_tokens):
            self.closed = False

            def gen():
                try:
                    yield SimpleNamespace(text="thinking", reasoning=True)
                    if text == "boom":
                        raise KeyboardInterrupt
                    yield SimpleNamespace(text="done", reasoning=False)
                    self.messages = self.messages + [text]
                    self.last_reply = SimpleNamespace(
                        finish_reason="stop", usage={"completion_tokens": 2,
                                                     "reasoning_tokens": 1})
                finally:
                    self.closed = True

            return gen()

    class Pipe(io.StringIO):
        def isatty(self):
            return False

    a = SimpleNamespace(quiet=False, max_tokens=8, backend="fake")
    s, out = Session(), Pipe()
    chat = _Chat(a, SimpleNamespace(n_ctx=8), s, inp=Pipe("boom\nok\n"), out=out, err=Pipe())
    assert chat.run() == 0
    assert s.messages == ["ok"] and s.closed
    assert out.getvalue() == ("> boom\n[reasoning] thinking\n" + INTERRUPTED + "\n"
                              "> ok\n[reasoning] thinking\n[answer] done\n"
                              "[2 tokens, 1 reasoning, stop]\n")
