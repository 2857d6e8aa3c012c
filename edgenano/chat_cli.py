"""`edgenano chat` and `edgenano generate`: the terminal front ends of sessions and generation.

Chat reads lines from the terminal (or from a pipe, so a conversation can be scripted). A line
that is exactly a command changes the session; anything else is sent as a user message.
"""

from __future__ import annotations

import argparse
import sys

HELP = """commands:
  /think, /no_think   reasoning on / off for the next turns (inside a message: that message)
  /budget N           thinking budget in tokens (-1 unlimited, 0 = reasoning off)
  /save PATH          save the session (state + history) to a file
  /load PATH          load a saved session
  /reset              forget the conversation
  /help               this text
  /quit               leave (Ctrl-D works too)"""

COMMANDS = {"/think", "/no_think", "/budget", "/save", "/load", "/reset", "/help", "/quit", "/exit"}
DIM, RESET = "\033[2m", "\033[0m"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="GGUF file (default: the built-in tiny reasoner)")
    p.add_argument("--backend", default="native", choices=["native", "reference", "llama.cpp"],
                   help="engine (default: native)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("-c", "--ctx", type=int, default=8192, help="context length (default 8192)")
    p.add_argument("--temp", type=float, default=None,
                   help="temperature (default: 0.6 with reasoning, greedy without)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default 0.95)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("-n", "--max-tokens", type=int, default=1024, help="tokens per reply")


def open_model(a):
    from .model import Model

    return Model(a.model, backend=a.backend, n_ctx=a.ctx, n_threads=a.threads)


class _Printer:
    """Streams a reply: reasoning dimmed (on a terminal), then the answer."""

    def __init__(self, out, color: bool):
        self.out, self.color, self.mode = out, color, None

    def __call__(self, text: str, reasoning: bool) -> None:
        if reasoning != self.mode:
            if self.color:
                self.out.write(DIM if reasoning else RESET)
            if reasoning:
                self.out.write("[reasoning] ")
            elif self.mode is not None:
                self.out.write("\n[answer] ")
            self.mode = reasoning
        self.out.write(text)
        self.out.flush()

    def end(self) -> None:
        self.out.write((RESET if self.color else "") + "\n")
        self.out.flush()


def _command(line: str, s, model, out) -> object:
    """Run a session command; returns the (possibly new) session, or None to quit."""
    from .session import ChatSession

    word, _, arg = line.partition(" ")
    if word in ("/quit", "/exit"):
        return None
    if word in ("/think", "/no_think"):
        s.thinking = word == "/think"
        if s.thinking and s.thinking_budget == 0:
            s.thinking_budget = -1
        out.write(f"reasoning {'on' if s.thinking else 'off'}\n")
    elif word == "/budget":
        try:
            s.thinking_budget = int(arg)
        except ValueError:
            out.write("usage: /budget N  (-1 unlimited, 0 off)\n")
        else:
            out.write(f"thinking budget {s.thinking_budget}\n")
    elif word == "/save" and arg:
        s.save(arg.strip())
        out.write(f"saved to {arg.strip()}\n")
    elif word == "/load" and arg:
        s = ChatSession.load(arg.strip(), model)
        out.write(f"loaded {arg.strip()} ({len(s.messages)} messages)\n")
    elif word == "/reset":
        s = model.chat(system=s.system, thinking=s.thinking, thinking_budget=s.thinking_budget)
    else:
        out.write(HELP + "\n")
    return s


def chat_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgenano chat", description="Chat with a model.",
                                epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("-s", "--system", default=None, help="system prompt")
    p.add_argument("--no-think", action="store_true", help="start with reasoning off")
    p.add_argument("--budget", type=int, default=-1, help="thinking budget (default -1)")
    p.add_argument("--grace", type=int, default=500,
                   help="tokens to wait for a newline after the budget (default 500)")
    a = p.parse_args(argv)
    from .state_file import StateFileError

    model = open_model(a)
    s = model.chat(system=a.system, thinking=not a.no_think, thinking_budget=a.budget,
                   grace=a.grace, temperature=a.temp, top_p=a.top_p, seed=a.seed)
    tty = sys.stdin.isatty()
    out = sys.stdout
    show = _Printer(out, color=out.isatty())
    if tty:
        out.write(f"edgenano chat: {model.path} ({a.backend}). /help for commands.\n")
    while True:
        if tty:
            out.write("> ")
            out.flush()
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if not tty:
            out.write(f"> {line}\n")
        if line.split()[0] in COMMANDS:
            try:
                s = _command(line, s, model, out)
            except (StateFileError, OSError) as e:
                out.write(f"error: {e}\n")
            if s is None:
                break
            continue
        for ev in s.send(line, stream=True, max_tokens=a.max_tokens):
            show(ev.text, ev.reasoning)
        show.end()
        r, u = s.last_reply, s.last_reply.usage
        out.write(f"[{u['completion_tokens']} tokens, {u['reasoning_tokens']} reasoning, "
                  f"{r.finish_reason}]\n")
        show.mode = None
    return 0


def generate_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgenano generate",
                                description="Continue a raw prompt (no chat template).")
    add_model_args(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text")
    a = p.parse_args(argv)
    model = open_model(a)
    for piece in model.generate(a.prompt, max_tokens=a.max_tokens,
                                temperature=a.temp or 0.0, top_p=a.top_p or 1.0, seed=a.seed,
                                stream=True):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
