"""OpenAI-shaped completions, as llama-cpp-python 0.3.36 and OpenAI clients expect them:
`create_chat_completion` (tools and tool_choice, streamed tool calls, response_format by
constrained decoding, logprobs, penalties, usage with reasoning tokens) and `create_completion`
(plain text, `text_completion` shape). Both are thin layers over sessions and generation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from . import chat as chatfmt
from .generation import Outcome, StopCutter, generate_steps, partial_suffix
from .sampling import SamplingParams

# Accepted and ignored, as by OpenAI's local servers: an end-user tag.
_IGNORED = {"user"}
# Accepted for compatibility, honoured only at their neutral value (llama-cpp-python's names).
_NEUTRAL = {"typical_p": 1.0, "tfs_z": 1.0, "mirostat_mode": 0, "mirostat_tau": 5.0,
            "mirostat_eta": 0.1, "n": 1, "logits_processor": None, "grammar": None,
            "stopping_criteria": None, "parallel_tool_calls": None, "suffix": None,
            "metadata": None, "store": None, "service_tier": None, "reasoning_effort": None}

CHAT_ARGS = {"tools", "tool_choice", "functions", "function_call", "temperature", "top_p",
             "top_k", "min_p", "stream", "stream_options", "stop", "seed", "response_format",
             "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
             "repeat_penalty", "logit_bias", "logprobs", "top_logprobs", "model",
             "thinking_budget", "max_thinking_tokens", "enable_thinking",
             "chat_template_kwargs", "grace"} | set(_NEUTRAL) | _IGNORED
COMPLETION_ARGS = {"max_tokens", "temperature", "top_p", "top_k", "min_p", "logprobs", "echo",
                   "stop", "frequency_penalty", "presence_penalty", "repeat_penalty", "stream",
                   "stream_options", "seed", "model", "logit_bias"} | set(_NEUTRAL) | _IGNORED


def check_args(fn: str, kwargs: dict, accepted: set[str]) -> None:
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"{fn}() got unknown argument(s): {', '.join(unknown)} "
                        f"(accepted: {', '.join(sorted(accepted))})")
    for k, neutral in _NEUTRAL.items():
        if k in kwargs and kwargs[k] is not None and kwargs[k] != neutral:
            raise ValueError(f"{fn}(): {k}={kwargs[k]!r} is not supported (only {neutral!r})")


def _stop_list(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if not all(isinstance(s, str) for s in stop):
        raise TypeError("stop must be a string or a list of strings")
    return list(stop)


def _max_tokens(kw: dict, default: int | None) -> int | None:
    """max_completion_tokens wins over max_tokens (OpenAI's newer name, reasoning included);
    None means up to the end of the context. (llama-cpp-python also reads <= 0 so; that hides
    mistakes, and OpenAI refuses it: so do we.)"""
    v = kw.get("max_completion_tokens")
    v = kw.get("max_tokens", default) if v is None else v
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise TypeError(f"max_tokens must be an int or None, got {v!r}")
    if v is not None and v < 1:
        raise ValueError(f"max_tokens must be >= 1 (or None: to the end of the context), got {v}")
    return v


def _sampling_overrides(kw: dict) -> dict:
    out = {k: kw[k] for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                              "seed", "presence_penalty", "frequency_penalty")
           if kw.get(k) is not None}
    if kw.get("logit_bias"):
        out["logit_bias"] = {int(k): float(v) for k, v in kw["logit_bias"].items()}
    return out


# -- chat -----------------------------------------------------------------------------------

@dataclass
class _ChatRequest:
    messages: list[dict]
    tools: list | None
    thinking: bool
    budget: int
    stream: bool
    include_usage: bool
    logprobs: int | None
    model_name: str


def _tools(kw: dict):
    tools = kw.get("tools")
    if tools is None and kw.get("functions"):  # the legacy `functions` API
        tools = [{"type": "function", "function": f} for f in kw["functions"]]
    choice = kw.get("tool_choice")
    if choice is None and kw.get("function_call") is not None:
        fc = kw["function_call"]
        choice = fc if isinstance(fc, str) else {"type": "function", "function": fc}
    if tools is not None and not isinstance(tools, list):
        raise TypeError("tools must be a list of {'type': 'function', 'function': {...}}")
    names = [(t.get("function") or t).get("name") for t in tools or []]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools "
                             f"({', '.join(map(str, names)) or 'none given'})")
    elif choice not in (None, "auto", "none", "required"):
        raise ValueError(f"tool_choice must be 'none', 'auto', 'required' or "
                         f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
    if choice == "required" and not tools:
        raise ValueError("tool_choice='required' needs tools")
    return (None if choice == "none" else tools), (choice or "auto")


def _budget(kw: dict) -> int:
    b = kw.get("thinking_budget")
    b = kw.get("max_thinking_tokens") if b is None else b
    if b is None:
        return -1
    if isinstance(b, bool) or not isinstance(b, int) or b < -1:
        raise ValueError(f"thinking_budget must be an int >= -1 (-1 unlimited, 0 off), got {b!r}")
    return b


def _template_kwargs(kw: dict) -> tuple[bool | None, dict]:
    extra = dict(kw.get("chat_template_kwargs") or {})
    explicit = extra.pop("enable_thinking", None)
    if kw.get("enable_thinking") is not None:
        explicit = kw["enable_thinking"]
    if explicit is not None and not isinstance(explicit, bool):
        raise TypeError(f"enable_thinking must be a bool, got {explicit!r}")
    return explicit, extra


def create_chat_completion(model, messages, **kw):
    """See Model.create_chat_completion."""
    check_args("create_chat_completion", kw, CHAT_ARGS)
    from .session import ChatSession, Turn

    msgs = chatfmt.normalize_messages(messages)
    tools, choice = _tools(kw)
    explicit, tkw = _template_kwargs(kw)
    budget = _budget(kw)
    thinking = False if budget == 0 else chatfmt.requested_thinking(msgs, explicit=explicit)
    logprobs = None
    if kw.get("logprobs"):
        logprobs = int(kw.get("top_logprobs") or 0)
        if not 0 <= logprobs <= 20:
            raise ValueError("top_logprobs must be between 0 and 20")
    # a server's request view brings its own session class (snapshots in its shared cache)
    session_class = getattr(model, "session_class", ChatSession)
    sess = session_class(model, thinking=thinking, thinking_budget=budget, tools=tools,
                         grace=kw.get("grace") or 500, template_kwargs=tkw)
    constraint = _constraint(model, kw.get("response_format"), tools, choice)
    turn = Turn(max_tokens=_max_tokens(kw, None), budget=budget, stop=_stop_list(kw.get("stop")),
                outcome=Outcome(), sampling=_sampling_overrides(kw), constraint=constraint,
                logprobs=logprobs)
    opts = kw.get("stream_options") or {}
    req = _ChatRequest(msgs, tools, thinking, budget, bool(kw.get("stream")),
                       bool(opts.get("include_usage")), logprobs,
                       kw.get("model") or model.name)
    if req.stream:
        return _chat_chunks(model, sess, req, turn)
    reply = sess.respond(msgs, thinking=thinking, turn=turn)
    return _chat_completion(model, reply, req)


def _constraint(model, response_format, tools, choice):
    """The grammar over the answer: response_format's JSON, or the forced tool call."""
    forced = isinstance(choice, dict) or choice == "required"
    if not forced and (response_format is None or response_format.get("type") == "text"):
        return None
    from . import grammar

    if forced:
        names = ([choice["function"]["name"]] if isinstance(choice, dict)
                 else [(t.get("function") or t)["name"] for t in tools])
        fns = [(t.get("function") or t) for t in tools if (t.get("function") or t)["name"]
               in names]
        return grammar.tool_call_constraint(model.tokenizer, fns,
                                            tool_call_syntax(model.chat_template),
                                            model.stop_ids)
    return grammar.response_format_constraint(model.tokenizer, response_format, model.stop_ids)


def tool_call_syntax(template: str) -> str:
    """'json' (`<TOOLCALL>[{...}]</TOOLCALL>`, 9B-v2) or 'xml' (`<tool_call><function=...>`,
    Nemotron 3 Nano), found by rendering a past tool call with the template."""
    from .template import render

    call = {"type": "function", "function": {"name": "probe_fn", "arguments": {"a": 1}}}
    text = render(template, [{"role": "user", "content": "x"},
                             {"role": "assistant", "content": "", "tool_calls": [call]},
                             {"role": "user", "content": "y"}], add_generation_prompt=False)
    return "xml" if "<function=probe_fn>" in text else "json"


def _token_logprob(tok, tid: int, lp: float, top) -> dict:
    def one(i, v):
        b = tok.token_bytes(i)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": float(v),
                "bytes": list(b)}

    return {**one(tid, lp), "top_logprobs": [one(i, v) for i, v in (top or [])]}


def _answer_logprobs(model, reply) -> dict:
    steps = [s for s in reply.steps if not s.reasoning and not s.forced and s.logprob is not None]
    return {"content": [_token_logprob(model.tokenizer, s.token, s.logprob, s.top_logprobs)
                        for s in steps], "refusal": None}


def _usage(reply) -> dict:
    u = reply.usage
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["total_tokens"],
            "completion_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]}}


def _chat_completion(model, reply, req: _ChatRequest) -> dict:
    msg = {"role": "assistant", "content": reply.content,
           "reasoning_content": reply.reasoning, "reasoning": reply.reasoning}
    if reply.tool_calls:
        msg["tool_calls"] = reply.tool_calls
        msg["content"] = reply.content or None
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
        "created": int(time.time()), "model": req.model_name,
        "choices": [{"index": 0, "message": msg,
                     "logprobs": None if req.logprobs is None else _answer_logprobs(model, reply),
                     "finish_reason": reply.finish_reason}],
        "usage": _usage(reply),
    }


class _ToolCallHold:
    """Streams answer text until a tool call opens; holds the rest for parsing at the end."""

    def __init__(self, active: bool):
        self.active, self.buf, self.held = active, "", False

    def feed(self, piece: str) -> str:
        if not self.active:
            return piece
        self.buf += piece
        if self.held:
            return ""
        at = [i for i in (self.buf.find(o) for o in chatfmt.TOOL_CALL_OPENERS) if i >= 0]
        if at:
            self.held = True
            out, self.buf = self.buf[: min(at)].rstrip(), self.buf[min(at):]
            return out
        keep = partial_suffix(self.buf, chatfmt.TOOL_CALL_OPENERS)
        cut = len(self.buf.rstrip()) if keep == 0 else len(self.buf) - keep
        # trailing whitespace waits too: before a call it is not content (the reply strips it)
        cut = min(cut, len(self.buf[:cut].rstrip()))
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out


def _chat_chunks(model, sess, req: _ChatRequest, turn) -> Iterator[dict]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict, finish=None, logprobs=None) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": req.model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                             "finish_reason": finish}]}

    yield chunk({"role": "assistant"})
    hold = _ToolCallHold(bool(req.tools))
    for ev in sess.respond(req.messages, thinking=req.thinking, stream=True, turn=turn):
        if ev.reasoning:
            yield chunk({"reasoning_content": ev.text, "reasoning": ev.text})
        elif text := hold.feed(ev.text):
            yield chunk({"content": text})
    reply = sess.last_reply
    if reply.tool_calls:
        for i, call in enumerate(reply.tool_calls):
            yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                         "function": call["function"]}]})
    elif hold.buf.rstrip():
        yield chunk({"content": hold.buf.rstrip()})  # e.g. an opener that never became a call
    yield chunk({}, finish=reply.finish_reason)
    if req.include_usage:
        yield {"id": cid, "object": "chat.completion.chunk", "created": created,
               "model": req.model_name, "choices": [], "usage": _usage(reply)}


# -- plain completions ----------------------------------------------------------------------

def create_completion(model, prompt, **kw):
    """See Model.create_completion."""
    check_args("create_completion", kw, COMPLETION_ARGS)
    if isinstance(prompt, str):
        ids = model.tokenize(prompt, add_bos=model.tokenizer.add_bos)
    elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
        ids = model.check_ids(list(prompt))
        prompt = model.detokenize(ids)
    else:
        raise TypeError("prompt must be a string or a list of token ids")
    if not ids:
        raise ValueError("the prompt is empty (no tokens to evaluate)")
    n_max = _max_tokens(kw, 16)
    room = model.n_ctx - len(ids)
    n_max = room if n_max is None else min(n_max, room)
    params = SamplingParams(**{"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                               **_sampling_overrides(kw)})
    n_logprobs = kw.get("logprobs")
    if n_logprobs is not None and (isinstance(n_logprobs, bool) or not 0 <= n_logprobs <= 20):
        raise ValueError("logprobs must be an int between 0 and 20")
    name = kw.get("model") or model.name
    gen = _complete(model, ids, n_max, params, _stop_list(kw.get("stop")), n_logprobs)
    echo = prompt if kw.get("echo") else ""
    if kw.get("stream"):
        usage = bool((kw.get("stream_options") or {}).get("include_usage"))
        return _completion_chunks(gen, echo, name, len(ids) if usage else None)
    pieces, steps, out = [], [], None
    for item in gen:
        if isinstance(item, tuple):
            pieces.append(item[0])
            steps.append(item[1])
        else:
            out = item
    text = "".join(pieces)
    choice = {"text": echo + text, "index": 0, "finish_reason": out.finish_reason,
              "logprobs": None if n_logprobs is None else
              _text_logprobs(model, steps, len(echo))}
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
            "created": int(time.time()), "model": name, "choices": [choice],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": out.completion_tokens,
                      "total_tokens": len(ids) + out.completion_tokens}}


def _complete(model, ids, n_max, params, stop, n_logprobs):
    """Yields (text, step) for each piece kept, then the Outcome. Continues from the model's
    current completion state when the prompt extends it (llama-cpp-python's prefix reuse)."""
    state, done = model._completion_state(ids)
    logits = model.eval(state, ids[done:])
    out = Outcome()
    cutter = StopCutter(stop)
    steps = []
    try:
        for step in generate_steps(model, state, logits, max_tokens=n_max, sampling=params,
                                   stop_ids=model.stop_ids, history=ids, outcome=out,
                                   logprobs=n_logprobs):
            steps.append(step)
            safe = cutter.feed(step.text)
            if safe or not cutter.hit:
                yield safe, step
            if cutter.hit:
                out.finish_reason = "stop"
                break
        if not cutter.hit and (rest := cutter.flush()):
            yield rest, None
    finally:
        model._keep_completion_state(state, ids + [s.token for s in steps[: out.n_fed]])
    yield out


def _text_logprobs(model, steps, offset0: int) -> dict:
    tok = model.tokenizer
    tokens, offsets, lps, tops = [], [], [], []
    pos = offset0
    for s in steps:
        if s is None:
            continue
        text = tok.token_bytes(s.token).decode("utf-8", errors="replace")
        tokens.append(text)
        offsets.append(pos)
        pos += len(s.text)
        lps.append(s.logprob)
        tops.append({tok.token_bytes(i).decode("utf-8", errors="replace"): v
                     for i, v in (s.top_logprobs or [])})
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": lps,
            "top_logprobs": tops}


def _completion_chunks(gen, echo: str, name: str, n_prompt: int | None) -> Iterator[dict]:
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(text: str, finish=None) -> dict:
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"text": text, "index": 0, "logprobs": None,
                             "finish_reason": finish}]}

    if echo:
        yield chunk(echo)
    out = None
    for item in gen:
        if isinstance(item, tuple):
            if item[0]:
                yield chunk(item[0])
        else:
            out = item
    yield chunk("", out.finish_reason)
    if n_prompt is not None:
        n = out.completion_tokens
        yield {"id": cid, "object": "text_completion", "created": created, "model": name,
               "choices": [], "usage": {"prompt_tokens": n_prompt, "completion_tokens": n,
                                        "total_tokens": n_prompt + n}}


