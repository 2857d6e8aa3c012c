"""JSON constrained decoding with llguidance, driven by random and adversarial 'models' over the
tiny built-in vocabulary: whatever the logits, the answer must be valid JSON (for the schema)."""

import json

import numpy as np
import pytest

llguidance = pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from edgenano import grammar  # noqa: E402
from edgenano.grammar import JsonConstraint, response_format_constraint  # noqa: E402

SCHEMA = {"type": "object",
          "properties": {"n": {"type": "integer"}, "color": {"enum": ["red", "green"]}},
          "required": ["n", "color"], "additionalProperties": False}
SCHEMA_FORMAT = {"type": "json_schema",
                 "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True}}
STOP_IDS = (2, 11, 12)  # the model's end-of-turn tokens (</s>, <SPECIAL_11>, eos <SPECIAL_12>)


@pytest.fixture(scope="module")
def tok():
    from edgenano.gguf_model import load_gguf
    from edgenano.models import default_model_path
    from edgenano.tokenizer import Tokenizer

    return Tokenizer(load_gguf(default_model_path()).metadata)


def drive(tok, c, seed, steps=200, adversarial=False):
    """Sample greedily from random logits through the mask until the constraint is done or a
    stop token is taken. A growing push towards closing tokens makes strings end in time; the
    adversarial model also wants control and stop tokens above everything else."""
    rng = np.random.default_rng(seed)
    closers = [i for i in range(tok.n_vocab) if tok.token_bytes(i) in (b'"', b"}", b"]")]
    control = [i for i in range(tok.n_vocab) if tok.is_control(i)]
    c.reset()
    ids = []
    for step in range(steps):
        logits = (rng.standard_normal(tok.n_vocab) * 3).astype(np.float32)
        logits[closers] += step / 10
        if adversarial:
            logits[control] += 1000.0
        x = c.mask(logits)
        allowed = np.flatnonzero(np.isfinite(x))
        assert allowed.size > 0, "the mask left no token before the JSON was complete"
        assert not any(tok.is_control(i) for i in allowed) or c.accepts_eos()
        tid = int(np.argmax(x))
        if tid in STOP_IDS:
            assert c.accepts_eos()
            return ids, True
        c.advance(tid)
        ids.append(tid)
        if c.is_done():
            return ids, True
    return ids, False


def text_of(tok, ids):
    return b"".join(tok.token_bytes(i) for i in ids).decode("utf-8")


@pytest.mark.parametrize("adversarial", [False, True])
def test_json_object_random_model(tok, adversarial):
    c = response_format_constraint(tok, {"type": "json_object"}, STOP_IDS)
    for seed in range(10):
        ids, done = drive(tok, c, seed, adversarial=adversarial)
        assert done
        value = json.loads(text_of(tok, ids))
        assert isinstance(value, dict)
        assert not any(tok.is_control(i) for i in ids)


@pytest.mark.parametrize("adversarial", [False, True])
def test_json_schema_random_model(tok, adversarial):
    c = response_format_constraint(tok, SCHEMA_FORMAT, STOP_IDS)
    colors = set()
    for seed in range(10):
        ids, done = drive(tok, c, seed, adversarial=adversarial)
        assert done
        value = json.loads(text_of(tok, ids))
        jsonschema.validate(value, SCHEMA)
        colors.add(value["color"])
    assert colors == {"red", "green"}


def test_json_object_with_llama_cpp_schema_key(tok):
    # llama-cpp-python reads {"type": "json_object", "schema": {...}} as that schema
    c = JsonConstraint(tok, {"type": "json_object", "schema": SCHEMA}, STOP_IDS)
    ids, done = drive(tok, c, 0)
    assert done
    jsonschema.validate(json.loads(text_of(tok, ids)), SCHEMA)


def test_start_end_and_stop_tokens(tok):
    c = JsonConstraint(tok, {"type": "json_object"}, STOP_IDS)
    first = np.flatnonzero(c.allowed())
    # no leading whitespace: the answer starts with the object
    assert first.size and all(tok.token_bytes(i).startswith(b"{") for i in first)
    assert not c.allowed()[list(STOP_IDS)].any() and not c.accepts_eos()
    for tid in tok.encode('{"a": [1, "x"]}', special=False):
        assert not c.is_done()
        c.advance(tid)
    assert c.accepts_eos() and c.is_done()
    assert set(np.flatnonzero(c.allowed())) == set(STOP_IDS)
    c.advance(11)  # taking a stop token once complete is fine
    assert c.is_done()
    c.reset()
    assert not c.is_done() and not c.accepts_eos()
    assert np.array_equal(np.flatnonzero(c.allowed()), first)


def test_mask_keeps_allowed_logits_and_cuts_padding(tok):
    c = JsonConstraint(tok, {"type": "json_object"})
    logits = np.arange(tok.n_vocab + 5, dtype=np.float32)  # a padded output layer
    x = c.mask(logits)
    ok = c.allowed()
    assert x.dtype == np.float32 and x.shape == logits.shape
    assert np.array_equal(x[:tok.n_vocab][ok], logits[:tok.n_vocab][ok])
    assert np.isneginf(x[:tok.n_vocab][~ok]).all() and np.isneginf(x[tok.n_vocab:]).all()
    assert logits[0] == 0.0  # not modified in place


def test_forbidden_token_raises(tok):
    c = JsonConstraint(tok, SCHEMA_FORMAT)
    with pytest.raises(ValueError, match="breaks the grammar"):
        c.advance(tok.encode("x", special=False)[0])


def test_whitespace_is_bounded(tok):
    c = JsonConstraint(tok, {"type": "json_object"})
    c.advance(tok.encode("{", special=False)[0])
    space = tok.encode(" ", special=False)[0]
    for _ in range(20):
        c.advance(space)
    assert not c.allowed()[space]


def test_text_and_none_give_no_constraint(tok):
    assert response_format_constraint(tok, None) is None
    assert response_format_constraint(tok, {"type": "text"}) is None
    assert grammar.json_grammar({"type": "text"}) is None


@pytest.mark.parametrize("rf, err, match", [
    ("json", TypeError, "must be a dict"),
    ({"type": "xml"}, ValueError, "type must be"),
    ({}, ValueError, "type must be"),
    ({"type": "json_schema"}, ValueError, "json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, ValueError, "no 'schema'"),
    ({"type": "json_schema", "json_schema": {"name": 3, "schema": {}}}, TypeError, "name"),
    ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, TypeError,
     "strict"),
    ({"type": "json_schema", "json_schema": {"schema": "{}"}}, TypeError, "must be an object"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}, ValueError,
     "llguidance rejected.*objekt"),
    ({"type": "json_object", "schema": {"type": "string", "format": "no-such-format"}},
     ValueError, "llguidance rejected"),
])
def test_bad_response_formats(tok, rf, err, match):
    with pytest.raises(err, match=match):
        response_format_constraint(tok, rf)


def test_ll_tokenizer_is_cached_and_marks_control_tokens(tok):
    lt = grammar.ll_tokenizer(tok)
    assert grammar.ll_tokenizer(tok) is lt
    assert lt.vocab_size == tok.n_vocab and lt.eos_token == tok.eos_id
    # the raw byte 0xFF reads as llguidance's special-token marker; it is never valid UTF-8
    assert all(lt.is_special_token(i) == (tok.is_control(i) or tok.token_bytes(i) == b"\xff")
               for i in range(tok.n_vocab))
    ids = tok.encode('{"key": "välue ✓"}', special=False)
    assert lt.decode_bytes(ids) == b"".join(tok.token_bytes(i) for i in ids)
