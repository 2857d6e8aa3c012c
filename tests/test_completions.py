"""create_chat_completion and create_completion as llama-cpp-python 0.3.36 and OpenAI clients
expect them: shapes checked with the `openai` package's own types, tool calls (an agent loop of
two rounds, streamed and not, on the published template and Nemotron 3 Nano's), stop strings,
prefill, tool_choice, logprobs, penalties, usage, unknown arguments, the completion state."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import edgenano
from edgenano.model import Model

openai_types = pytest.importorskip("openai.types")
from openai.types import Completion  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

TOOLS = [{"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a", "b"], "additionalProperties": False}}}]


@pytest.fixture(scope="module")
def model():
    return Model(n_ctx=1024, n_threads=2)


@pytest.fixture(scope="module")
def roomy(model):
    """The built-in model with room for tool definitions (char-level tokens in its tiny
    vocabulary make them long); past its trained context, which warns."""
    with pytest.warns(UserWarning, match="trained on"):
        return Model(model.path, n_ctx=4096, n_threads=2)


def scripted(model: Model, *scripts: str) -> Model:
    """`model` whose logits pick the tokens of each script in turn (one script per prompt, then
    end of turn), with the real engine, tokenizer and template underneath."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_ctx past the trained context: said once, above
        m = Model(model.path, n_ctx=model.n_ctx, n_threads=2, chat_template=model.chat_template)
    queue = [model.tokenize(s, special=False) for s in scripts]
    pos = {"script": None, "i": 0}
    real = m.eval
    eos = model.tokenizer.eos_id

    def eval(state, ids):
        real(state, ids)
        cur = pos["script"]
        if cur is not None and pos["i"] < len(cur) and list(ids) == [cur[pos["i"]]]:
            pos["i"] += 1  # the token we made it sample was fed back: the next one
        elif cur is None or pos["i"] > 0:  # a new prompt: the next script
            pos["script"], pos["i"] = queue.pop(0), 0
            cur = pos["script"]
        logits = np.zeros(m.tokenizer.n_vocab, dtype=np.float32)
        logits[cur[pos["i"]] if pos["i"] < len(cur) else eos] = 30.0
        return logits

    m.eval = eval
    return m


def test_shapes_validate_with_openai_types(model):
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    out = model.create_chat_completion(msgs, max_tokens=12, temperature=0.0)
    ChatCompletion.model_validate(out)
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 1
    chunks = list(model.create_chat_completion(msgs, max_tokens=12, temperature=0.0,
                                               stream=True,
                                               stream_options={"include_usage": True}))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == out["usage"]
    text = model.create_completion("12 + 5 = ", max_tokens=6, temperature=0.0)
    Completion.model_validate(text)
    assert text["object"] == "text_completion" and text["usage"]["completion_tokens"] <= 6
    assert model("12 + 5 = ", max_tokens=6, temperature=0.0)["choices"] == text["choices"]


def test_unknown_and_bad_arguments(model):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(TypeError, match="frobnicate, temprature"):
        model.create_chat_completion(msgs, temprature=0.5, frobnicate=1)
    with pytest.raises(TypeError, match="bogus"):
        model.create_completion("x", bogus=True)
    with pytest.raises(ValueError, match="mirostat_mode"):
        model.create_chat_completion(msgs, mirostat_mode=2)
    with pytest.raises(ValueError, match="role 'robot'"):
        model.create_chat_completion([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="non-empty"):
        model.create_chat_completion([])
    with pytest.raises(ValueError, match="tool_choice names 'mul'"):
        model.create_chat_completion(msgs, tools=TOOLS,
                                     tool_choice={"type": "function",
                                                  "function": {"name": "mul"}})
    assert issubclass(edgenano.ContextOverflow, edgenano.EdgenanoError)


def _loop(m: Model, template_name: str, stream: bool):
    """Two rounds of the agent loop: the model calls a tool, gets its result, calls again,
    then answers."""
    msgs = [{"role": "system", "content": "/no_think"},
            {"role": "user", "content": "Add 2 and 3, then add 4 to that."}]
    replies = []
    for _ in range(3):
        out = m.create_chat_completion(msgs, tools=TOOLS, max_tokens=200, stream=stream)
        if stream:
            chunks = list(out)
            for c in chunks:
                ChatCompletionChunk.model_validate(c)
            finish = chunks[-1]["choices"][0]["finish_reason"]
            calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
            content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            msg = {"role": "assistant", "content": content or None}
            if calls:
                msg["tool_calls"] = [{k: tc[k] for k in ("id", "type", "function")}
                                     for tc in calls]
        else:
            ChatCompletion.model_validate(out)
            finish = out["choices"][0]["finish_reason"]
            msg = out["choices"][0]["message"]
            msg = {k: msg[k] for k in ("role", "content", "tool_calls") if k in msg}
        replies.append((finish, msg))
        msgs.append(msg)
        for call in msg.get("tool_calls", []):
            args = json.loads(call["function"]["arguments"])
            msgs.append({"role": "tool", "tool_call_id": call["id"],
                         "content": str(args["a"] + args["b"])})
    return replies, msgs


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streamed"])
@pytest.mark.parametrize("template_name", ["nano-v2", "nemotron3-nano"])
def test_tool_calling_loop(model, published_template, template_name, stream):
    tmpl = published_template(template_name)
    if template_name == "nano-v2":
        call = '<TOOLCALL>[{{"name": "add", "arguments": {{"a": {}, "b": {}}}}}]</TOOLCALL>'.format
    else:
        call = ("<tool_call>\n<function=add>\n<parameter=a>\n{}\n</parameter>\n<parameter=b>\n{}"
                "\n</parameter>\n</function>\n</tool_call>").format
    with pytest.warns(UserWarning, match="trained on"):  # the tools' system text is long
        base = Model(model.path, n_ctx=4096, n_threads=2, chat_template=tmpl)
    m = scripted(base, "Let me add. " + call(2, 3), call(5, 4), "The total is 9.")
    replies, msgs = _loop(m, template_name, stream)
    (f1, m1), (f2, m2), (f3, m3) = replies
    assert f1 == f2 == "tool_calls" and f3 == "stop"
    assert json.loads(m1["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert m1["content"] == "Let me add."  # the text before the call stays content
    assert json.loads(m2["tool_calls"][0]["function"]["arguments"]) == {"a": 5, "b": 4}
    assert m3["content"] == "The total is 9." and "tool_calls" not in m3
    # the tool results reached the prompt in the template's own form
    prompt = base.apply_chat_template(msgs[:-1], tools=TOOLS)
    assert ("<TOOL_RESPONSE>[5]</TOOL_RESPONSE>" in prompt if template_name == "nano-v2"
            else "<tool_response>\n5\n</tool_response>" in prompt)


def test_stop_strings_removed(model):
    m = scripted(model, "Hello world. STOP and more", "Hello world. STOP and more")
    msgs = [{"role": "user", "content": "hi /no_think"}]
    out = m.create_chat_completion(msgs, stop=["STOP"], max_tokens=40)
    assert out["choices"][0]["message"]["content"] == "Hello world."
    assert out["choices"][0]["finish_reason"] == "stop"
    chunks = list(m.create_chat_completion(msgs, stop="STOP", max_tokens=40, stream=True))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed.strip() == "Hello world." and "ST" not in streamed


def test_history_ending_with_assistant_is_continued(model, published_template):
    for tmpl in (model.chat_template, published_template("nano-v2"),
                 published_template("nemotron3-nano")):
        m = Model(model.path, n_ctx=1024, n_threads=2, chat_template=tmpl)
        msgs = [{"role": "user", "content": "What is 21 + 34? /no_think"},
                {"role": "assistant", "content": "The answer is"}]
        prompt = m.apply_chat_template(msgs)
        assert prompt.endswith("The answer is")
        out = m.create_chat_completion(msgs, max_tokens=4, temperature=0.0)
        assert out["choices"][0]["message"]["reasoning_content"] is None


def test_tool_choice(roomy):
    model = roomy
    msgs = [{"role": "user", "content": "Add 2 and 3. /no_think"}]
    none = model.apply_chat_template(msgs, tools=TOOLS)
    assert "add" in none
    for choice in ("required", {"type": "function", "function": {"name": "add"}}):
        out = model.create_chat_completion(msgs, tools=TOOLS, tool_choice=choice,
                                           max_tokens=60, temperature=0.0)
        msg = out["choices"][0]["message"]
        assert out["choices"][0]["finish_reason"] == "tool_calls", msg
        args = json.loads(msg["tool_calls"][0]["function"]["arguments"])
        assert msg["tool_calls"][0]["function"]["name"] == "add"
        assert set(args) == {"a", "b"} and all(0 <= v <= 99 for v in args.values())
    m = scripted(model, '<TOOLCALL>[{"name": "add", "arguments": {"a": 1, "b": 2}}]</TOOLCALL>')
    out = m.create_chat_completion(msgs, tools=TOOLS, tool_choice="none", max_tokens=60)
    assert "tool_calls" not in out["choices"][0]["message"]  # none: calls are not parsed
    assert out["choices"][0]["finish_reason"] == "stop"


def test_json_schema_answer_validates(model):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0,
                                                          "maximum": 999},
                                               "unit": {"enum": ["apples", "pears"]}},
              "required": ["answer", "unit"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "sum", "schema": schema,
                                                  "strict": True}}
    msgs = [{"role": "user", "content": "What is 21 + 34?"}]
    out = model.create_chat_completion(msgs, response_format=fmt, max_tokens=200,
                                       temperature=0.0, thinking_budget=16)
    msg = out["choices"][0]["message"]
    assert msg["reasoning_content"]  # the reasoning ran free; the answer is the JSON
    jsonschema.validate(json.loads(msg["content"]), schema)
    # json_object: any object. The tiny model's free-text keys never end, so a scripted one
    # writes the object; the grammar ends the answer at its closing brace.
    m = scripted(model, '{"answer": 55} and then some text')
    obj = m.create_chat_completion(msgs, response_format={"type": "json_object"},
                                   max_tokens=80, thinking_budget=0)
    assert obj["choices"][0]["message"]["content"] == '{"answer": 55}'
    assert obj["choices"][0]["finish_reason"] == "stop"


def test_logprobs(model):
    msgs = [{"role": "user", "content": "What is 2 + 3? /no_think"}]
    out = model.create_chat_completion(msgs, max_tokens=5, temperature=0.0, logprobs=True,
                                       top_logprobs=3)
    content = out["choices"][0]["logprobs"]["content"]
    # every answer token, the blank line the reply strips included
    joined = "".join(t["token"] for t in content)
    assert joined.strip() == out["choices"][0]["message"]["content"]
    ids = model.apply_chat_template(msgs, tokenize=True)
    logits = model.eval(model.new_state(), ids).astype(np.float64)
    ref = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    first = content[0]
    assert abs(first["logprob"] - ref.max()) < 1e-5  # greedy: the best token
    tops = [t["logprob"] for t in first["top_logprobs"]]
    assert len(tops) == 3 and tops == sorted(tops, reverse=True)
    assert np.allclose(tops, np.sort(ref)[::-1][:3], atol=1e-5)
    text = model.create_completion("What is 12 + 5?", max_tokens=3, temperature=0.0, logprobs=2)
    lp = text["choices"][0]["logprobs"]
    n = text["usage"]["completion_tokens"]
    assert n >= 1 and len(lp["tokens"]) == len(lp["token_logprobs"]) == n
    assert "".join(lp["tokens"]) == text["choices"][0]["text"]
    assert all(len(t) == 2 for t in lp["top_logprobs"])


def test_logit_bias_and_penalties(model):
    tid = model.tokenize("7", special=False)[0]
    msgs = [{"role": "user", "content": "Say anything. /no_think"}]
    out = model.create_chat_completion(msgs, max_tokens=4, temperature=0.0,
                                       logit_bias={str(tid): 100.0})
    assert out["choices"][0]["message"]["content"] == "7777"
    for pen in ({"frequency_penalty": 200.0}, {"presence_penalty": 200.0}):
        out = model.create_chat_completion(msgs, max_tokens=4, temperature=0.0,
                                           logit_bias={tid: 100.0}, **pen)
        assert out["choices"][0]["message"]["content"].count("7") == 1  # once, then penalised


def test_max_tokens_names(model):
    msgs = [{"role": "user", "content": "What is 21 + 34?"}]
    out = model.create_chat_completion(msgs, max_tokens=50, max_completion_tokens=3,
                                       temperature=0.0)
    assert out["usage"]["completion_tokens"] == 3 and out["choices"][0]["finish_reason"] == \
        "length"
    small = Model(model.path, n_ctx=64, n_threads=2)
    out = small.create_chat_completion(msgs, max_tokens=None, temperature=0.0)  # to the end
    assert out["usage"]["total_tokens"] <= 64


def test_completion_state_save_load(model):
    m = Model(model.path, n_ctx=512, n_threads=2)
    fed = []
    real = m.eval
    m.eval = lambda st, ids: fed.append(len(ids)) or real(st, ids)
    a = m.create_completion("12 + 5 = ", max_tokens=4, temperature=0.0)
    saved = m.save_state()
    assert saved.tokens[: len(m.tokenize("12 + 5 = "))] == m.tokenize("12 + 5 = ")
    m.create_completion("something else", max_tokens=2, temperature=0.0)
    m.load_state(saved)
    fed.clear()
    cont = "12 + 5 = " + a["choices"][0]["text"] + " and"
    b = m.create_completion(cont, max_tokens=3, temperature=0.0)
    assert fed[0] < len(m.tokenize(cont))  # continued from the saved state, not from scratch
    fresh = Model(model.path, n_ctx=512, n_threads=2).create_completion(cont, max_tokens=3,
                                                                        temperature=0.0)
    assert b["choices"][0]["text"] == fresh["choices"][0]["text"]
    with pytest.raises(TypeError, match="save_state"):
        m.load_state("not a state")


def test_from_pretrained(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGENANO_CACHE", str(tmp_path / "cache"))
    hf = tiny_checkpoint("mix")
    m = Model.from_pretrained(hf, outtype="f32", backend="reference", n_ctx=256)
    assert str(tmp_path / "cache") in m.path and m.path.endswith("-f32.gguf")
    again = Model.from_pretrained(hf, outtype="f32", backend="reference", n_ctx=256)
    assert again.path == m.path  # converted once
    direct = Model.from_pretrained(m.path, backend="reference", n_ctx=256)
    assert direct.path == m.path
    with pytest.raises(FileNotFoundError, match="config.json"):
        Model.from_pretrained(tmp_path)


@pytest.mark.parametrize("kwargs,error", [
    ({"max_tokens": -3}, ValueError), ({"max_tokens": 0}, ValueError),
    ({"max_tokens": 2.5}, TypeError), ({"temperature": float("nan")}, ValueError),
    ({"temperature": float("inf")}, ValueError), ({"repeat_penalty": float("nan")}, ValueError),
    ({"thinking_budget": float("nan")}, ValueError), ({"seed": -2}, ValueError),
    ({"stop": [1]}, TypeError), ({"enable_thinking": "yes"}, TypeError),
])
def test_odd_arguments_are_refused(model, kwargs, error):
    with pytest.raises(error):
        model.create_chat_completion([{"role": "user", "content": "hi"}],
                                     **{"max_tokens": 2, **kwargs})


def test_odd_inputs_elsewhere(model):
    assert model.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=2,
                                        seed=-1, temperature=0.5)["choices"]  # -1: random
    with pytest.raises(TypeError, match="str"):
        model.tokenize(None)
    with pytest.raises(ValueError, match="out of range"):
        model.detokenize([-1])
    with pytest.raises(ValueError, match="out of range"):
        model.eval(model.new_state(), [2**32 + 5])  # never cast to int32
    with pytest.raises(ValueError, match="n_ctx"):
        Model(model.path, n_ctx=2**31)


def test_no_chat_template_is_a_clear_error(model):
    m = Model(model.path, n_ctx=256, n_threads=2)
    m.chat_template = None  # as a GGUF without tokenizer.chat_template
    for call in (lambda: m.chat().send("hi"),
                 lambda: m.create_chat_completion([{"role": "user", "content": "hi"}])):
        with pytest.raises(edgenano.ChatTemplateError, match="no chat template"):
            call()
    assert m.create_completion("hi", max_tokens=2)["choices"]  # plain completions still work
