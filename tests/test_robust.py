"""Bad inputs end in one typed error that says what is wrong: interrupted or failing conversions
(nothing partial left, stale temporaries cleaned), tokenizer metadata of the wrong type, damaged
or foreign state files, and thread counts out of bounds."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as VT

from edgenano.convert import OutputError, convert_checkpoint, writer
from edgenano.convert.cli import main as convert_main
from edgenano.errors import GGUFError, StateFileError, TokenizerError
from edgenano.model import Model


@pytest.fixture(scope="module")
def hf_dir(tiny_checkpoint):
    return tiny_checkpoint("mix")


@pytest.fixture(scope="module")
def gguf_path(hf_dir, tmp_path_factory):
    return convert_checkpoint(hf_dir, tmp_path_factory.mktemp("robust") / "mix.gguf", "f32")


@pytest.fixture(scope="module")
def model(gguf_path):
    return Model(gguf_path, n_ctx=256, n_threads=2)


def _only(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------------------------------------
# The converter: killed, terminated, read-only, full disk


def _convert_then(signum: int, out: Path, hf: Path) -> subprocess.CompletedProcess:
    """Run the converter CLI in a child that sends itself `signum` after its third chunk."""
    code = textwrap.dedent(f"""
        import os, sys
        from edgenano.convert import writer
        from edgenano.convert.cli import main
        real, n = writer.quantize_rows, [0]
        def rows(x, q):
            n[0] += 1
            if n[0] == 3:
                os.kill(os.getpid(), {int(signum)})
            return real(x, q)
        writer.quantize_rows = rows
        sys.exit(main([{str(hf)!r}, "-o", {str(out)!r}, "--no-progress"]))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_killed_conversion_leaves_a_named_partial_that_the_next_run_removes(hf_dir, tmp_path):
    out = tmp_path / "m.gguf"
    r = _convert_then(signal.SIGKILL, out, hf_dir)
    assert r.returncode == -signal.SIGKILL
    left = _only(tmp_path)
    assert len(left) == 1 and left[0].startswith(f"m.gguf.edgenano-partial-{socket.gethostname()}-")
    # Another conversion still writing (a live process) is left alone; the dead one's is removed.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = writer.partial_path(out, socket.gethostname(), other.pid)
        live.write_bytes(b"in progress")
        assert convert_main([str(hf_dir), "-o", str(out), "--no-progress"]) == 0
    finally:
        other.kill()
        other.wait()
    assert _only(tmp_path) == sorted(["m.gguf", live.name])
    assert gguf.GGUFReader(out).tensors


def test_legacy_temporaries_of_dead_pids_are_removed(hf_dir, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".m.gguf.{dead}.tmp").write_bytes(b"old run")
    (tmp_path / "m.gguf.edgenano-partial-otherhost-1").write_bytes(b"someone else's")
    convert_checkpoint(hf_dir, tmp_path / "m.gguf", "f32")
    assert _only(tmp_path) == ["m.gguf", "m.gguf.edgenano-partial-otherhost-1"]


def test_sigterm_removes_the_partial_output(hf_dir, tmp_path):
    r = _convert_then(signal.SIGTERM, tmp_path / "m.gguf", hf_dir)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines() == ["edgenano-convert: terminated; no output written"]
    assert _only(tmp_path) == []


class _FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left."""

    room = 20000

    def write(self, b):
        if self.tell() + len(memoryview(b).cast("B")) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(b)


@pytest.mark.parametrize("force", [False, True])
def test_full_disk_is_one_line_exit_1_and_nothing_left(hf_dir, tmp_path, monkeypatch, capsys,
                                                       force):
    out = tmp_path / "m.gguf"
    if force:
        out.write_bytes(b"old")
    monkeypatch.setattr(writer, "open", lambda p, mode: _FullDisk(p, "w"), raising=False)
    args = [str(hf_dir), "-o", str(out), "--no-progress"] + (["--force"] if force else [])
    assert convert_main(args, prog="edgenano convert") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edgenano convert: error: cannot write {out}: No space left on device (the "
                   "disk is full: free space, or write elsewhere) [ENOSPC]; nothing was written"]
    assert _only(tmp_path) == (["m.gguf"] if force else [])
    if force:
        assert out.read_bytes() == b"old"
    with pytest.raises(OutputError) as e:  # the API: an OutputError, the OSError as its cause
        convert_checkpoint(hf_dir, out, force=True)
    assert e.value.__cause__.errno == errno.ENOSPC


def test_a_real_write_failure_in_a_child(hf_dir, tmp_path):
    """The kernel refuses the write (a file-size limit: EFBIG, the path a full disk takes too),
    in the installed command's process: one line, exit 1, nothing left."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal ends the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = tmp_path / "m.gguf"
    r = subprocess.run([sys.executable, "-m", "edgenano", "convert", str(hf_dir), "-o", str(out),
                        "--no-progress"], capture_output=True, text=True, timeout=300,
                       preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"edgenano convert: error: cannot write {out}: File too large [EFBIG]; nothing was "
        "written"]
    assert _only(tmp_path) == []


def test_read_only_directory_reports_the_real_error(hf_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.gguf"
    # Checked before any work: access() says no (a read-only mount, or no permission).
    monkeypatch.setattr(writer.os, "access", lambda p, mode: False)
    assert convert_main([str(hf_dir), "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edgenano-convert: error: cannot write {out}: directory {tmp_path} is not "
                   "writable (read-only or no permission); choose another output directory"]
    monkeypatch.undo()

    # Turned read-only while running: the write fails and so does the cleanup; the user is
    # told about the write, not about the cleanup.
    def refused(p, mode):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(p))

    def unlink(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "cleanup refused", str(self))

    monkeypatch.setattr(writer, "open", refused, raising=False)
    monkeypatch.setattr(Path, "unlink", unlink)
    assert convert_main([str(hf_dir), "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system [EROFS]" in err[0], err
    assert "cleanup" not in err[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 directory")
def test_read_only_directory_for_real(hf_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert convert_main([str(hf_dir), "-o", str(ro / "m.gguf"), "--no-progress"]) == 1
    finally:
        ro.chmod(0o755)
    assert "is not writable" in capsys.readouterr().err and _only(ro) == []


# ---------------------------------------------------------------------------------------------
# Tokenizer metadata of the wrong type: a TokenizerError (a GGUFError) naming the key


def rewrite(src: Path, dst: Path, keys: dict) -> Path:
    """Copy a GGUF with some keys replaced ((value, type[, item type])) or dropped (None)."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "nemotron_h")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in keys:
            continue
        w.add_key_value(key, f.contents(), f.types[0], f.types[-1] if f.types[0] == VT.ARRAY
                        else None)
    for key, spec in keys.items():
        if spec is not None:
            w.add_key_value(key, *spec)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


T = "tokenizer.ggml."
N_VOCAB = 512  # the tiny vocabulary (devtools/tiny.py)
TOKENIZER_CASES = {
    "tokens_as_ints": ({T + "tokens": (list(range(N_VOCAB)), VT.ARRAY, VT.INT32)},
                       r"'tokenizer.ggml.tokens' must be ARRAY/STRING, found ARRAY/INT32"),
    "tokens_as_string": ({T + "tokens": ("abc", VT.STRING)},
                         r"'tokenizer.ggml.tokens' must be ARRAY/STRING, found STRING"),
    "tokens_missing": ({T + "tokens": None}, r"no tokenizer.ggml.tokens key"),
    "merges_as_floats": ({T + "merges": ([1.0, 2.0], VT.ARRAY, VT.FLOAT32)},
                         r"'tokenizer.ggml.merges' must be ARRAY/STRING, found ARRAY/FLOAT32"),
    "merges_unknown_tokens": ({T + "merges": (["zq qz"], VT.ARRAY, VT.STRING)},
                              r"tokenizer.ggml.merges entry 0 \('zq qz'\) is not two tokens"),
    "merges_no_space": ({T + "merges": (["abc"], VT.ARRAY, VT.STRING)},
                        r"tokenizer.ggml.merges entry 0 \('abc'\)"),
    "token_type_strings": ({T + "token_type": (["1"] * N_VOCAB, VT.ARRAY, VT.STRING)},
                           r"'tokenizer.ggml.token_type' must be ARRAY/INT16\|INT32"),
    "token_type_short": ({T + "token_type": ([1] * 10, VT.ARRAY, VT.INT32)},
                         rf"tokenizer.ggml.token_type must be {N_VOCAB} integers .*a list of 10"),
    "token_type_unknown": ({T + "token_type": ([1] * 5 + [99] + [1] * (N_VOCAB - 6), VT.ARRAY,
                                               VT.INT32)},
                           r"token_type of token 5 is 99, not a llama.cpp token type"),
    "model_missing": ({T + "model": None}, r"tokenizer.ggml.model is None; edgenano reads"),
    "model_as_int": ({T + "model": (2, VT.UINT32)},
                     r"'tokenizer.ggml.model' must be STRING, found UINT32"),
    "pre_as_array": ({T + "pre": (["tekken"], VT.ARRAY, VT.STRING)},
                     r"'tokenizer.ggml.pre' must be STRING, found ARRAY/STRING"),
    "bos_out_of_range": ({T + "bos_token_id": (N_VOCAB + 5, VT.UINT32)},
                         rf"'tokenizer.ggml.bos_token_id' = {N_VOCAB + 5} is not a token id"),
    "eos_as_string": ({T + "eos_token_id": ("2", VT.STRING)},
                      r"'tokenizer.ggml.eos_token_id' must be .*INT32.*, found STRING"),
    "add_bos_as_int": ({T + "add_bos_token": (1, VT.UINT8)},
                       r"'tokenizer.ggml.add_bos_token' must be BOOL, found UINT8"),
    "chat_template_as_int": ({"tokenizer.chat_template": (3, VT.INT32)},
                             r"'tokenizer.chat_template' must be STRING, found INT32"),
}


@pytest.mark.parametrize("case", sorted(TOKENIZER_CASES))
def test_bad_tokenizer_metadata_is_a_tokenizer_error(gguf_path, tmp_path, case):
    keys, message = TOKENIZER_CASES[case]
    bad = rewrite(gguf_path, tmp_path / f"{case}.gguf", keys)
    with pytest.raises(TokenizerError, match=message) as e:
        Model(bad, backend="reference", n_ctx=64)
    assert str(bad) in str(e.value)
    assert isinstance(e.value, GGUFError) and isinstance(e.value, ValueError)


def test_tokenizer_from_a_dict_checks_python_types(gguf_path):
    from edgenano.gguf_model import load_gguf
    from edgenano.tokenizer import Tokenizer

    md = dict(load_gguf(gguf_path).metadata)
    for key, value, message in [
        (T + "tokens", ["a", 3], r"tokenizer.ggml.tokens must be an array of strings, found a "
                                 r"list of 2 \(int/str\)"),
        (T + "tokens", "abc", "must be an array of strings, found str"),
        (T + "token_type", [1.5] * N_VOCAB, "token_type must be 512 integers"),
        (T + "bos_token_id", -1, r"bos_token_id is -1; it must be a token id in \[0, 512\)"),
        (T + "bos_token_id", True, "bos_token_id is True"),
        (T + "add_bos_token", "yes", "add_bos_token must be a bool"),
        ("tokenizer.chat_template", b"x", "chat_template must be a string"),
    ]:
        with pytest.raises(TokenizerError, match=message):
            Tokenizer(dict(md, **{key: value}))


# ---------------------------------------------------------------------------------------------
# State files: damaged, forged or another model's


def edit_state(src: Path, dst: Path, *, keys: dict | None = None,
               tensors: dict | None = None) -> Path:
    """Copy a state file with keys replaced ((value, type[, item type])) and tensors replaced
    (an array) or dropped (None); new names are added."""
    keys, tensors = dict(keys or {}), dict(tensors or {})
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "edgenano_state")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in keys:
            continue
        w.add_key_value(key, f.contents(), f.types[0], f.types[-1] if f.types[0] == VT.ARRAY
                        else None)
    for key, spec in keys.items():
        if spec is not None:
            w.add_key_value(key, *spec)
    arrays = {t.name: np.array(t.data) for t in r.tensors}
    arrays.update(tensors)
    for name, a in arrays.items():
        if a is not None:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    """A native-backend chat state file of the tiny model, after one turn."""
    s = model.chat(system="sys", thinking=False, temperature=0.0)
    s.send("remember this", max_tokens=4)
    path = tmp_path_factory.mktemp("state") / "chat.gguf"
    s.save(path)
    return path


def _flip_in_messages(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    i = data.index(b'"role"')
    dst.write_bytes(data[:i + 2] + b"\xff" + data[i + 3:])  # "r\xffle": not UTF-8
    return dst


K = "edgenano_state."
STATE_CASES = {
    "tensor_as_f16": (dict(tensors={"conv.0": np.zeros((3, 192), np.float16)}),
                      r"tensor 'conv.0' is F16; state files hold F32, I8 and I32"),
    "tensor_as_int32": (dict(tensors={"ssm.0": np.zeros((8, 16, 16), np.int32)}),
                        r"state array 'ssm.0' is int32 \(8, 16, 16\); this model keeps float32 "
                        r"\(8, 16, 16\)"),
    "tensor_shape": (dict(tensors={"conv.0": np.zeros((192, 3), np.float32)}),
                     r"state array 'conv.0' is float32 \(192, 3\); this model keeps float32 "
                     r"\(3, 192\)"),
    "kv_rows": (dict(tensors={"k.3": np.zeros((2, 64), np.int8)}),
                r"state array 'k.3' is int8 \(2, 64\); this model keeps int8 \(\d+, \*\)"),
    "kv_row_bytes": (dict(tensors={"k.3": "wider"}),
                     r"k.3 holds \d+ bytes, this model expects \d+"),
    "missing_tensor": (dict(tensors={"ssm.0": None}), r"missing \['ssm.0'\]"),
    "extra_tensor": (dict(tensors={"ssm.99": np.zeros((8, 16, 16), np.float32)}),
                     r"unexpected \['ssm.99'\]"),
    "kv_type": (dict(tensors={"kv_type": np.array([8], np.int32)}),
                r"KV cache type 8 .*open it with the same kv_type"),
    "settings_not_json": (dict(keys={K + "settings": ("{thinking: no", VT.STRING)}),
                          r"the saved settings are not valid JSON"),
    "settings_not_object": (dict(keys={K + "settings": ("[1, 2]", VT.STRING)}),
                            r"the saved settings must be a JSON dict, found list"),
    "settings_wrong_type": (dict(keys={K + "settings": ('{"temperature": "hot"}', VT.STRING)}),
                            r"setting 'temperature' is 'hot', not int or float or NoneType"),
    "settings_out_of_range": (dict(keys={K + "settings": ('{"top_p": 7}', VT.STRING)}),
                              r"top_p must be in \(0, 1\], got 7"),
    "settings_nan": (dict(keys={K + "settings": ('{"temperature": NaN}', VT.STRING)}),
                     r"temperature must be a finite number"),
    "settings_budget": (dict(keys={K + "settings": ('{"thinking_budget": -5}', VT.STRING)}),
                        r"thinking_budget must be an int"),
    "messages_not_list": (dict(keys={K + "messages": ('{"role": "user"}', VT.STRING)}),
                          r"the saved messages must be a JSON list, found dict"),
    "messages_bad_role": (dict(keys={K + "messages": ('[{"role": "wizard"}]', VT.STRING)}),
                          r"messages\[0\] has role 'wizard'"),
    "messages_deep": (dict(keys={K + "messages": ("[" * 100000 + "]" * 100000, VT.STRING)}),
                      r"the saved messages are not valid JSON"),
    "settings_as_int": (dict(keys={K + "settings": (5, VT.UINT32)}),
                        r"key 'edgenano_state.settings' has the wrong type \(UINT32\)"),
    "tokens_as_strings": (dict(keys={K + "tokens": (["a"], VT.ARRAY, VT.STRING)}),
                          r"key 'edgenano_state.tokens' has the wrong type \(ARRAY/STRING\)"),
    "n_tokens_too_many": (dict(keys={K + "n_tokens": (10**6, VT.UINT32)}),
                          r"n_tokens is 1000000 but the file holds \d+ tokens"),
    "token_out_of_vocab": (dict(keys={K + "tokens": ([5] * 30 + [10**6], VT.ARRAY, VT.INT32),
                                      K + "n_tokens": (31, VT.UINT32)}),
                           r"token id 1000000 is out of range \[0, 512\)"),
    "version": (dict(keys={K + "version": (2, VT.UINT32)}), r"state format 2, expected 1"),
    "fingerprint": (dict(keys={K + "model_fingerprint": ("0" * 64, VT.STRING)}),
                    r"saved from a different model"),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES) + ["non_utf8", "truncated", "not_gguf"])
def test_bad_state_file_is_a_state_file_error(model, saved, tmp_path, case):
    from edgenano.session import ChatSession

    bad = tmp_path / f"{case}.gguf"
    if case == "non_utf8":
        message = r"key 'edgenano_state.messages' is not UTF-8 text"
        _flip_in_messages(saved, bad)
    elif case == "truncated":
        message = r"not a readable edgenano state file: truncated file"
        bad.write_bytes(saved.read_bytes()[:-700])
    elif case == "not_gguf":
        message = r"not an edgenano state file \(not a GGUF file\)"
        bad.write_text('{"messages": []}')
    else:
        edit, message = STATE_CASES[case]
        if isinstance(edit.get("tensors", {}).get("k.3"), str):
            k = next(np.array(t.data) for t in gguf.GGUFReader(saved).tensors if t.name == "k.3")
            edit = dict(tensors={"k.3": np.zeros((k.shape[0], k.shape[1] + 2), np.int8)})
        edit_state(saved, bad, **edit)
    with pytest.raises(StateFileError, match=message) as e:
        ChatSession.load(bad, model)
    assert str(bad) in str(e.value) and isinstance(e.value, ValueError)


def test_state_of_another_model_with_a_forged_fingerprint(model, saved, tmp_path,
                                                          tiny_checkpoint):
    """Arrays shaped for other dimensions are refused even when the fingerprint was copied."""
    from edgenano.session import ChatSession

    other_path = convert_checkpoint(tiny_checkpoint("mix", ssm_state_size=8), tmp_path / "o.gguf")
    other = Model(other_path, n_ctx=256, n_threads=2)
    s = other.chat(thinking=False, temperature=0.0)
    s.send("hi", max_tokens=2)
    s.save(tmp_path / "o.state")
    forged = edit_state(tmp_path / "o.state", tmp_path / "forged.state",
                        keys={K + "model_fingerprint": (model.fingerprint, VT.STRING)})
    with pytest.raises(StateFileError, match=r"state array 'conv.0' is float32 \(3, 160\); "
                                             r"this model keeps float32 \(3, 192\)"):
        ChatSession.load(forged, model)
    with pytest.raises(StateFileError, match="different model"):
        ChatSession.load(tmp_path / "o.state", model)


def test_state_saved_with_another_kv_type(model, saved, gguf_path):
    from edgenano.session import ChatSession

    q8 = Model(gguf_path, n_ctx=256, n_threads=2, kv_type="q8_0")
    with pytest.raises(StateFileError, match=r"saved with KV cache type 1 .* this model runs 8"):
        ChatSession.load(saved, q8)


def test_model_state_api_refuses_foreign_states(model, gguf_path):
    other = Model(gguf_path, n_ctx=256, n_threads=2)
    st = other.new_state()
    other.eval(st, [1, 2, 3])
    from edgenano.model import ModelState

    with pytest.raises(ValueError, match="another Model"):
        model.load_state(ModelState(st, [1, 2, 3]))
    arrays = other.export_state(st)
    with pytest.raises(ValueError, match=r"token id 512 is out of range"):
        model.import_state(arrays, [1, 2, 512])
    with pytest.raises(ValueError, match=r"more than n_ctx=256"):
        model.import_state(arrays, [1] * 300)
    with pytest.raises(TypeError, match="not an ndarray"):
        model.import_state(dict(arrays, **{"conv.0": [[0.0] * 192] * 3}), [1, 2, 3])
    restored = model.import_state(arrays, [1, 2, 3])  # the same model's arrays are fine
    assert np.array_equal(model.eval(restored, [4]), other.eval(st, [4]))


def test_reference_model_state_of_other_dimensions_is_refused(gguf_path, tiny_checkpoint,
                                                              tmp_path):
    from edgenano.model import ModelState

    ref = Model(gguf_path, backend="reference", n_ctx=64)
    narrow = Model(convert_checkpoint(tiny_checkpoint("mix", ssm_state_size=8),
                                      tmp_path / "n.gguf"), backend="reference", n_ctx=64)
    st = narrow.new_state()
    narrow.eval(st, [1, 2])
    with pytest.raises(ValueError, match=r"state array 'conv.0' is float32 \(3, 160\); this "
                                         r"model keeps float32 \(3, 192\)"):
        ref.load_state(ModelState(st, [1, 2]))
    own = ref.new_state()
    ref.eval(own, [1, 2])
    ref.load_state(ModelState(own, [1, 2]))  # its own is fine


# ---------------------------------------------------------------------------------------------
# Threads


@pytest.mark.parametrize("n, error, message", [
    (10000, ValueError, r"n_threads must be between 1 and \d+ \(4 per CPU here"),
    (0, ValueError, "n_threads must be between 1"),
    (-3, ValueError, "n_threads must be between 1"),
    (2.0, TypeError, "n_threads must be an int or None, got 2.0"),
    (True, TypeError, "n_threads must be an int or None, got True"),
])
def test_thread_count_is_bounded(gguf_path, n, error, message):
    for backend in ("native", "reference"):
        with pytest.raises(error, match=message):
            Model(gguf_path, backend=backend, n_ctx=64, n_threads=n)
    top = 4 * (os.cpu_count() or 1)
    m = Model(gguf_path, n_ctx=64, n_threads=top)  # the bound itself runs
    assert m.eval(m.new_state(), [1, 2, 3]).shape == (N_VOCAB,)


def test_cli_thread_count_is_one_line(gguf_path, capsys):
    from edgenano.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate", str(gguf_path), "-t", "10000", "-n", "1", "-p", "hi"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n_threads must be between 1 and" in err[0], err


def test_json_settings_roundtrip_keeps_types(model, saved):
    """What save() writes passes the checks load() makes (the settings' JSON types)."""
    r = gguf.GGUFReader(saved)
    settings = json.loads(r.fields[K + "settings"].contents())
    from edgenano.session import _checked_settings

    assert _checked_settings(settings) == settings
