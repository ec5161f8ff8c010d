"""`omnic build --target onnx`: a vision encoder, an LM prefill and every shipped spec (shrunk by tests/shrink.py)
exported with dynamic batch and length, checked by onnx.checker, and run in onnxruntime at sizes other than the
export's, matching torch within 1e-4. Each export takes seconds (torch.export), so each model is exported once."""
from __future__ import annotations

import json
import os

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import compiler  # noqa: E402
import runtime_torch  # noqa: E402
from compiler.cli import cli  # noqa: E402
from compiler.emit import onnx as emit_onnx  # noqa: E402
from compiler.emit.build import BuildError  # noqa: E402
from tests.shrink import SHRINK  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = {"name": "vit", "inputs": [{"name": "pixels", "kind": "image", "shape": ["B", 3, 32, 32]}],
       "layers": [{"id": "vit", "type": "VisionEncoder", "params": {
           "family": "siglip", "patch_size": 8, "hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32,
           "image_size": 32}}]}
LM = {"name": "lm", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}], "context": 64,
      "layers": [{"id": "lm", "type": "DecoderLM", "params": {
          "family": "llama", "vocab_size": 64, "hidden": 16, "layers": 2, "heads": 2, "kv_heads": 1, "ff_dim": 32,
          "tie": True}}]}


def run_both(out_dir: str, compiled, env: dict, seed: int = 7):
    """(onnxruntime outputs, torch outputs) of the exported model and a fresh torch build, inputs at `env`."""
    model = runtime_torch.build(compiled, seed=0).eval()
    inputs = emit_onnx.example_inputs(compiled.graph, env, seed)
    sess = ort.InferenceSession(os.path.join(out_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip(model.output_names, sess.run(model.output_names, {k: v.numpy() for k, v in inputs.items()})))
    with torch.no_grad():
        want = {k: v.numpy() for k, v in model(**inputs).items()}
    return got, want


def dims(out_dir: str) -> dict:
    m = onnx.load(os.path.join(out_dir, "model.onnx"))
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(m.graph.input) + list(m.graph.output)}


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    c = compiler.compile(VIT).raise_for_errors()
    out = str(tmp_path_factory.mktemp("vit"))
    files = emit_onnx.write(c, out)
    return c, out, files


def test_vision_encoder(vit, capfd):
    c, out, files = vit
    assert sorted(os.path.basename(f) for f in files) == ["model.onnx", "onnx.json", "report.json"]
    onnx.checker.check_model(os.path.join(out, "model.onnx"), full_check=True)
    assert dims(out) == {"pixels": ["batch", 3, 32, 32], "vit.vision_model.post_layernorm": ["batch", 16, 16]}
    for b in (1, 3, 5):                                 # the export traced batch 2: none of these is frozen out
        got, want = run_both(out, c, {"B": b})
        for k in want:
            assert got[k].shape == want[k].shape and np.allclose(got[k], want[k], atol=1e-4, rtol=0), k
    info = json.loads(open(os.path.join(out, "onnx.json")).read())
    assert info["trace_sizes"]["B"] == 2 and info["check_sizes"]["B"] == 1
    assert max(info["max_abs_difference"].values()) <= 1e-4
    assert capfd.readouterr().err == ""                 # no progress display and no exporter noise off a terminal


def test_a_mismatch_is_a_build_error(vit):
    c, out, _ = vit
    wrapped = emit_onnx.Positional(runtime_torch.build(c, seed=1).eval())   # other weights than the exported ones
    inputs = emit_onnx.example_inputs(c.graph, {"B": 2}, 0)
    want = emit_onnx.reference(wrapped, inputs)
    with pytest.raises(BuildError, match="differs from torch by up to"):
        emit_onnx.compare(os.path.join(out, "model.onnx"), wrapped.output_names,
                          {k: v.numpy() for k, v in inputs.items()}, want)


def test_lm_prefill_through_the_cli(tmp_path):
    spec = tmp_path / "lm.json"
    spec.write_text(json.dumps(LM))
    out = tmp_path / "lm-onnx"
    r = CliRunner().invoke(cli, ["build", str(spec), "--target", "onnx", "-o", str(out), "--weights"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert {"model.onnx", "model.safetensors", "report.json", "onnx.json"} <= set(os.listdir(out))
    assert dims(str(out)) == {"input_ids": ["batch", "seq"], "lm.lm_head": ["batch", "seq", 64]}
    c = compiler.compile(str(spec))
    for b, t in ((1, 1), (3, 11), (2, 64)):             # traced at (2, 6): one token, longer, the full context
        got, want = run_both(str(out), c, {"B": b, "T": t})
        assert got["lm.lm_head"].shape == (b, t, 64)
        assert np.allclose(got["lm.lm_head"], want["lm.lm_head"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("path", sorted(SHRINK))
def test_shipped_spec_shrunk(path, tmp_path):
    c = compiler.compile(os.path.join(ROOT, path), overrides=SHRINK[path])
    assert c.ok, "\n".join(d.render() for d in c.errors)
    emit_onnx.write(c, str(tmp_path))                   # checks, and compares at batch 3 / another length itself
    info = json.loads((tmp_path / "onnx.json").read_text())
    assert max(info["max_abs_difference"].values()) <= 1e-4
    assert info["check_sizes"]["B"] != info["trace_sizes"]["B"]
    assert "traced_once_failed" not in info
    assert info["traced_once"] or "fvlm" in path     # each stack's layers traced once (fVLM's are parts of one node)
    for name, shape in info["inputs"].items():
        declared = c.report["inputs"][name]["shape"]
        names = {"B": "batch", "T": "seq", "F": "frames"}
        names.update({s: info["dims"][n] for s, n in list(names.items()) if isinstance(info["dims"].get(n), int)})
        assert shape == [names.get(d, d) for d in declared], name


@pytest.mark.parametrize("spec", [LM, VIT], ids=["lm", "vit"])
def test_shape_inference_in_the_first_folding_round_only_gives_the_same_graph(spec):
    from onnx_ir import serde
    from compiler.emit import onnx_convert
    c = compiler.compile(spec).raise_for_errors()
    wrapped = emit_onnx.Positional(runtime_torch.build(c, seed=0).eval())
    example = emit_onnx.example_inputs(c.graph, emit_onnx.sizes(c, emit_onnx.EXPORT_SIZES))
    protos = []
    for every_round in (True, False):
        model, _, _ = emit_onnx.export(wrapped, example, emit_onnx.dynamic_shapes(c.graph, c))
        n = len(model.graph)
        onnx_convert.optimise(model, every_round=every_round)
        assert len(model.graph) < n                     # something was folded: the second round ran
        protos.append(serde.serialize_model(model).SerializeToString())
    assert protos[0] == protos[1]
