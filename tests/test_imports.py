"""The Python package is layered: module-level imports form no cycle, the model layer never
imports the chat layer, and backends import their shared base, not each other."""

from __future__ import annotations

import ast
from pathlib import Path

import edgenano

PKG = Path(edgenano.__file__).parent

# The chat layer (template, switch, budget, generation, sessions) sits above the model.
CHAT_LAYER = {"chat", "template", "sampling", "generation", "grammar", "completions", "session",
              "chat_cli"}
MODEL_LAYER = {"model", "gguf_model", "layers", "tokenizer", "backends", "backend_base", "engine",
               "reference", "state_file", "errors"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def top_level_imports(path: Path) -> set[str]:
    """edgenano modules imported at module level (not inside functions) by the file at path."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("edgenano")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if not base.startswith("edgenano"):
                continue
            for a in node.names:  # `from . import x` imports the module x
                sub = f"{base}.{a.name}"
                out.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (PKG.parent / sub.replace(".", "/")).is_dir() else base)
    return out - {me}


def graph() -> dict[str, set[str]]:
    return {module_name(p): top_level_imports(p) for p in PKG.rglob("*.py")}


def test_no_import_cycles():
    g = graph()
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for dep in sorted(g.get(m, ())):
            visit(dep)
        path.pop()
        done.add(m)

    for m in sorted(g):
        visit(m)


def test_model_layer_does_not_import_chat_layer():
    g = graph()
    for m in MODEL_LAYER:
        deps = {d.split(".")[1] for d in g[f"edgenano.{m}"] if d.count(".") >= 1}
        assert not deps & CHAT_LAYER, f"edgenano.{m} imports {sorted(deps & CHAT_LAYER)}"


def test_backends_share_a_base_and_not_each_other():
    g = graph()
    assert "edgenano.engine" not in g["edgenano.backends"]
    assert "edgenano.backends" not in g["edgenano.engine"]


def test_no_reaching_into_backends():
    """Above the model, states go through Model's API, never model.backend or a state's impl."""
    for m in CHAT_LAYER | {"state_file", "cli", "info", "bench", "reasoner/eval"}:
        text = (PKG / f"{m}.py").read_text()
        assert ".backend." not in text and ".impl" not in text, m


def test_convert_imports_from_the_source_tree_as_installed():
    """`edgenano.convert` is the source tree's edgenano/convert, with no install and without the
    C++ extension (the editable install's import redirect taken away, edgenano._C blocked)."""
    import subprocess
    import sys
    import textwrap

    root = PKG.parent
    code = textwrap.dedent(f"""
        import sys

        class NoExtension:
            def find_spec(self, name, path=None, target=None):
                if name == "edgenano._C":
                    raise ImportError("blocked")

        sys.meta_path[:] = [NoExtension()] + [
            f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
        sys.path.insert(0, {str(root)!r})
        import edgenano.convert
        print(edgenano.convert.__file__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", check=True).stdout.strip()
    assert out == str(root / "edgenano" / "convert" / "__init__.py")
