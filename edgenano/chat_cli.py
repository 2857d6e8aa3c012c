"""`edgenano chat` and `edgenano generate`: the terminal front ends of sessions and generation.

Chat reads lines from the terminal (or from a pipe, so a conversation can be scripted). A line
whose first word is a command runs it; any other line is sent as a user message. Ctrl-C stops a
reply and drops that turn; errors are one line and the chat goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

from .cli import add_output_args, describe_error, fail, open_model
from .errors import ContextOverflow, EdgenanoError

DIM, RESET = "\033[2m", "\033[0m"
INTERRUPTED = "[interrupted: reply dropped; the conversation is as it was before this message]"
PROMPT_HINT = "(Ctrl-D or /quit to exit)"

# name -> (usage, what it does); each is run by the _Chat method of the same name ("_no_think").
# A usage without an argument means the command takes none.
COMMANDS = {
    "/think": ("/think", "reasoning on from the next message (a budget of 0 becomes -1)"),
    "/no_think": ("/no_think", "reasoning off from the next message"),
    "/budget": ("/budget N", "thinking budget in tokens: -1 unlimited, 0 reasoning off"),
    "/save": ("/save [PATH]", "save history and state (default ./edgenano-chat-DATE-TIME.gguf)"),
    "/load": ("/load PATH", "continue a session saved with /save"),
    "/reset": ("/reset", "forget the conversation, keep the settings"),
    "/help": ("/help", "this text"),
    "/quit": ("/quit", "leave (Ctrl-D works too)"),
    "/exit": ("/exit", "the same as /quit"),
}
HELP = "commands:\n" + "\n".join(f"  {u:<14} {h}" for u, h in COMMANDS.values()) + """
A line that is exactly /think or /no_think is the command; with text after it, the line is sent
as a message, and its switch holds for that message and the turns after it.
A line that starts with // is sent with one / removed (//etc sends /etc); any other /word is
refused as an unknown command.
Ctrl-C stops a reply and drops that turn: the conversation is as it was before the message."""


def parse_line(line: str) -> tuple[str, str, str]:
    """("message", text, ""), ("command", name, argument) or ("unknown", word, "")."""
    text = line.strip()
    if text.startswith("//"):
        return "message", line.lstrip()[1:], ""
    word, _, arg = text.partition(" ")
    arg = arg.strip()
    if word in ("/think", "/no_think") and arg:
        return "message", line, ""
    if word in COMMANDS:
        return "command", word, arg
    if word.startswith("/"):
        return "unknown", word, ""
    return "message", line, ""


def _at_least(lo: int):
    def parse(s: str) -> int:
        v = int(s)
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {v}")
        return v

    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


def add_model_args(p: argparse.ArgumentParser, *, chat: bool) -> None:
    """The options of commands that open a model. Sampling defaults differ: a chat samples as
    NVIDIA recommends for the mode of each turn, generate is greedy unless told otherwise."""
    p.add_argument("model", nargs="?", help="GGUF file (default: the built-in tiny reasoner)")
    p.add_argument("--backend", default="native", choices=["native", "reference", "llama.cpp"],
                   help="engine (default: native)")
    p.add_argument("-t", "--threads", type=_at_least(1), default=None,
                   help="CPU threads of native and llama.cpp (default: every core this process "
                        "may run on)")
    p.add_argument("-c", "--ctx", type=_at_least(1), default=None,
                   help="context length in tokens (default: the model's trained context, at "
                        "most 8192)")
    if chat:
        p.add_argument("--temp", type=float, default=None,
                       help="temperature (default: 0.6 with reasoning on, 0 = greedy with it off)")
        p.add_argument("--top-p", type=float, default=None,
                       help="nucleus sampling (default: 0.95 with reasoning on, 1.0 with it off)")
        p.add_argument("-n", "--max-tokens", type=_at_least(1), default=1024,
                       help="most tokens per reply, reasoning included (default 1024)")
    else:
        p.add_argument("--temp", type=float, default=0.0,
                       help="temperature (default: 0 = greedy)")
        p.add_argument("--top-p", type=float, default=1.0,
                       help="nucleus sampling (default: 1.0 = off)")
        p.add_argument("-n", "--max-tokens", type=_at_least(1), default=1024,
                       help="most tokens to generate (default 1024)")
    p.add_argument("--seed", type=int, default=None,
                   help="sampling seed (default: a fresh one each run)")


def _threads(a) -> int | None:
    """-t, or every core for llama.cpp too (llama-cpp-python's own default is half of them)."""
    if a.threads is None and a.backend == "llama.cpp":
        from .backend_base import default_threads

        return default_threads()
    return a.threads


class _Printer:
    """Streams a reply: the reasoning (dimmed on a terminal) after `[reasoning]`, then the
    answer. Blank lines at the start or the end of either part are never printed."""

    def __init__(self, out, color: bool):
        self.out, self.color = out, color
        self.mode = None  # the part being printed: True reasoning, False answer
        self.opened = False  # its label is out
        self.started = False  # anything printed in this reply
        self.held = ""  # newlines at the end so far: printed only if more of the part follows

    def __call__(self, text: str, reasoning: bool) -> None:
        if reasoning != self.mode:
            self.mode, self.opened, self.held = reasoning, False, ""
        text = self.held + text
        if not self.opened:
            text = text.lstrip("\n")
        body = text.rstrip("\n")
        self.held = text[len(body):]
        if not body:
            return
        if not self.opened:
            if self.color:
                self.out.write(DIM if reasoning else RESET)
            if reasoning:
                self.out.write("\n[reasoning] " if self.started else "[reasoning] ")
            elif self.started:
                self.out.write("\n[answer] ")
            self.opened = self.started = True
        self.out.write(body)
        self.out.flush()

    def end(self) -> None:
        self.out.write((RESET if self.color else "") + ("\n" if self.started else ""))
        self.out.flush()


@contextlib.contextmanager
def _sigint_ignored():
    """Ctrl-C is ignored while a closed turn puts the session back, so a second press cannot
    leave it half-restored."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals go elsewhere anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _default_save_path() -> Path:
    stem = time.strftime("edgenano-chat-%Y%m%d-%H%M%S")
    path, n = Path(f"{stem}.gguf"), 1
    while path.exists():
        n += 1
        path = Path(f"{stem}-{n}.gguf")
    return path


def _reason(e: BaseException) -> str:
    """Why an operation on a file failed; our errors already name the file."""
    return e.strerror if isinstance(e, OSError) and e.strerror else describe_error(e)


class _Chat:
    def __init__(self, a, model, session, inp=None, out=None, err=None):
        self.a, self.model, self.s = a, model, session
        self.inp, self.out, self.err = inp or sys.stdin, out or sys.stdout, err or sys.stderr
        self.tty = self.inp.isatty()
        self.color = self.out.isatty()
        self.done = False

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str, prefix: str = "error: ") -> None:
        self.out.flush()
        self.err.write(prefix + text + "\n")
        self.err.flush()

    def run(self) -> int:
        if self.tty and not self.a.quiet:
            self.say(f"edgenano chat: {self.model.path} ({self.a.backend}, context "
                     f"{self.model.n_ctx}). /help for commands, Ctrl-D to leave.")
        while not self.done:
            reading = True
            try:
                line = self._read()
                reading = False
                self._handle(line)
            except KeyboardInterrupt:
                if reading:  # at the prompt: nothing to stop, ask again
                    self.say(("\n" if self.tty else "") + PROMPT_HINT)
                else:  # in a command, or after a reply was complete
                    self.say("\n[interrupted]")
            except EOFError:
                if self.tty:
                    self.out.write("\n")
                break
        self.out.flush()
        return 0

    def _read(self) -> str:
        if self.tty:
            return input("> ")
        line = self.inp.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def _handle(self, line: str) -> None:
        if not line.strip():
            return
        if not self.tty and not self.a.quiet:
            self.say(f"> {line}")
        kind, what, arg = parse_line(line)
        if kind == "message":
            self._reply(what)
        elif kind == "unknown":
            self.error(f"unknown command {what}: /help lists the commands (start the line with "
                       "// to send a message that begins with /)")
        elif arg and " " not in COMMANDS[what][0]:
            self.error(f"usage: {COMMANDS[what][0]}  ({what} takes no argument)", prefix="")
        else:
            getattr(self, "_" + what[1:])(arg)

    def _reply(self, text: str) -> None:
        gen = self.s.send(text, stream=True, max_tokens=self.a.max_tokens)
        show = _Printer(self.out, self.color)
        try:
            for ev in gen:
                show(ev.text, ev.reasoning)
        except (KeyboardInterrupt, EdgenanoError) as e:
            with _sigint_ignored():
                gen.close()  # an unfinished turn leaves the session as it was before it
            show.end()
            if isinstance(e, KeyboardInterrupt):
                self.say(INTERRUPTED)
            elif isinstance(e, ContextOverflow):
                self.error(f"the conversation no longer fits the context ({self.model.n_ctx} "
                           "tokens) and this message was dropped: /reset to start over, or "
                           "restart with a larger -c/--ctx")
            else:
                self.error(f"{describe_error(e)} (this message was dropped)")
            return
        show.end()
        if not self.a.quiet:
            r = self.s.last_reply
            u = r.usage
            self.say(f"[{u['completion_tokens']} tokens, {u['reasoning_tokens']} reasoning, "
                     f"{r.finish_reason}]")

    # -- the commands ---------------------------------------------------------------------
    def _think(self, arg: str) -> None:
        self.s.thinking = True
        note = ""
        if self.s.thinking_budget == 0:
            self.s.thinking_budget, note = -1, " (thinking budget -1: unlimited)"
        self.say("reasoning on" + note)

    def _no_think(self, arg: str) -> None:
        self.s.thinking = False
        self.say("reasoning off")

    def _budget(self, arg: str) -> None:
        from .chat import BudgetRule

        try:
            n = int(arg)
            BudgetRule(n, self.s.grace)
        except ValueError:
            self.error("usage: /budget N  (-1 unlimited, 0 reasoning off, N > 0 tokens)", prefix="")
            return
        self.s.thinking_budget = n
        note = (" (reasoning off)" if n == 0 else
                "" if self.s.thinking else " (reasoning is off: /think turns it on)")
        self.say(f"thinking budget {n}{note}")

    def _save(self, arg: str) -> None:
        path = Path(arg).expanduser() if arg else _default_save_path()
        try:
            self.s.save(path)
        except (OSError, EdgenanoError, ValueError) as e:
            self.error(f"cannot save to {path}: {_reason(e)}")
        else:
            self.say(f"saved to {path}")

    def _load(self, arg: str) -> None:
        from .session import ChatSession

        if not arg:
            self.error("usage: /load PATH  (a file written by /save)", prefix="")
            return
        path = Path(arg).expanduser()
        try:
            s = ChatSession.load(path, self.model)
        except (OSError, EdgenanoError, ValueError) as e:
            self.error(f"cannot load {path}: {_reason(e)}")
        else:
            self.s = s
            self.say(f"loaded {path} ({len(s.messages)} messages)")

    def _reset(self, arg: str) -> None:
        self.s.reset()
        self.say("conversation forgotten (settings kept)")

    def _help(self, arg: str) -> None:
        self.say(HELP)

    def _quit(self, arg: str) -> None:
        self.done = True

    _exit = _quit


def _readline_editing() -> None:
    """Line editing and history at the prompt, where the platform has GNU readline."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401


def chat_main(argv: list[str] | None = None) -> int:
    prog = "edgenano chat"
    p = argparse.ArgumentParser(prog=prog, description="Chat with a model.", epilog=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, chat=True)
    p.add_argument("-s", "--system", default=None, help="system prompt")
    p.add_argument("--no-think", action="store_true", help="start with reasoning off")
    p.add_argument("--budget", type=_at_least(-1), default=-1,
                   help="thinking budget in tokens (-1 unlimited, 0 reasoning off; default -1)")
    p.add_argument("--grace", type=_at_least(0), default=500,
                   help="tokens to wait for a newline after the budget (default 500)")
    add_output_args(p, quiet="no banner, no echo of piped lines, no token counts after replies")
    a = p.parse_args(argv)
    model = open_model(prog, a.model, backend=a.backend, n_ctx=a.ctx, n_threads=_threads(a),
                       verbose=a.verbose)
    s = model.chat(system=a.system, thinking=not a.no_think, thinking_budget=a.budget,
                   grace=a.grace, temperature=a.temp, top_p=a.top_p, seed=a.seed)
    if sys.stdin.isatty():
        _readline_editing()
    return _Chat(a, model, s).run()


def generate_main(argv: list[str] | None = None) -> int:
    prog = "edgenano generate"
    p = argparse.ArgumentParser(prog=prog,
                                description="Continue a raw prompt (no chat template).")
    add_model_args(p, chat=False)
    p.add_argument("-p", "--prompt", required=True, help="prompt text")
    add_output_args(p, quiet="no token count on stderr after the text")
    a = p.parse_args(argv)
    model = open_model(prog, a.model, backend=a.backend, n_ctx=a.ctx, n_threads=_threads(a),
                       verbose=a.verbose)
    t0, n = time.perf_counter(), 0
    try:
        for piece in model.generate(a.prompt, max_tokens=a.max_tokens, temperature=a.temp,
                                    top_p=a.top_p, seed=a.seed, stream=True):
            n += 1
            sys.stdout.write(piece)
            sys.stdout.flush()
    except ContextOverflow:
        sys.stdout.write("\n" if n else "")
        fail(prog, f"the prompt and its continuation do not fit the context ({model.n_ctx} "
                   "tokens): give a larger -c/--ctx, a smaller -n or a shorter prompt")
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not a.quiet:
        sys.stderr.write(f"[{n} tokens in {time.perf_counter() - t0:.2f} s]\n")
    return 0
