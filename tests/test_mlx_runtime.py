"""The MLX runtime against the compiler and the torch runtime, over the whole registry (tests/op_examples.py).

For every example spec: the MLX build has exactly the declared tensors (names, MLX-layout shapes, count = the
compiler's), a seed gives the torch runtime's values, weights saved by either runtime load into the other (one
safetensors file, torch layout), and the outputs agree within 1e-4 (fp32). Plus the layout table, strict loading,
emitted code, and the OpenBLAS preload.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch

import runtime_torch
from compiler import compile, registry
from compiler.registry import W
from runtime_mlx import layout
from runtime_mlx import registry as mlx_registry
from runtime_mlx import weights as mlx_weights
from runtime_torch import registry as torch_registry
from runtime_torch import weights as torch_weights

from runtime_common.inputs import example_inputs
from tests.op_examples import CASE_IDS as IDS
from tests.op_examples import CASES, ENV, OP_EXAMPLES

ATOL = 1e-4


def make_inputs(compiled, seed: int = 0) -> dict[str, np.ndarray]:
    return example_inputs(compiled.graph, ENV, seed)

def run_torch(model, inputs):
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def run_mlx(model, inputs):
    out = model(**{k: mx.array(v) for k, v in inputs.items()})
    mx.eval(out)
    return {k: np.array(v) for k, v in out.items()}


def assert_close(a: dict, b: dict, what: str):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, f"{what} {k}: {a[k].shape} vs {b[k].shape}"
        err = float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) if a[k].size else 0.0
        assert err <= ATOL, f"{what} {k}: max |diff| {err:.3g} > {ATOL}"


@pytest.fixture(scope="module")
def compiled_cases():
    return {}


def get_compiled(spec):
    return compile(spec, batch=ENV["B"], context=ENV["T"], frames=ENV["F"]).raise_for_errors()


# --- the registry ---------------------------------------------------------------------------------------------------
def test_every_torch_op_has_an_mlx_implementation():
    missing = sorted(set(torch_registry.all_impls()) - set(mlx_registry.all_impls()))
    assert not missing, f"ops with a torch implementation but none in runtime_mlx/ops: {missing}"


def test_mlx_implements_only_compiler_ops():
    assert set(mlx_registry.all_impls()) <= set(registry.all_ops())


# ops whose inputs must satisfy a data condition random inputs miss; each has its own test below
OWN_TEST = {"MergeImageTokens"}


def test_every_implemented_op_has_an_example():
    assert set(mlx_registry.all_impls()) - {"Input"} - OWN_TEST <= set(OP_EXAMPLES)


def test_duplicate_registration_is_refused():
    from mlx import nn
    mlx_registry.all_impls()          # loaded first: in a fresh worker the registration would otherwise come first
    with pytest.raises(ValueError, match="two MLX implementations"):
        mlx_registry.implements("Linear")(type("Again", (nn.Module,), {}))


def _spec(layers, inputs, outputs=None):
    s = {"name": "t", "inputs": inputs, "layers": layers}
    if outputs:
        s["outputs"] = outputs
    return s


def _tok(d=8):
    return [{"name": "x", "kind": "tokens", "shape": ["B", "T", d]}]


def test_nesting_lists_and_inputs():
    lin = {"type": "Linear", "params": {"out_features": 8, "bias": False}}
    c = compile(_spec([dict(lin, id="lm.model.layers", repeat=2),
                       {"type": "Linear", "params": {"out_features": 4}, "id": "lm.model.head"}], _tok()))
    m = runtime_mlx.build(c.raise_for_errors())
    assert set(m.named_parameters()) == {"lm.model.layers.0.weight", "lm.model.layers.1.weight",
                                         "lm.model.head.weight", "lm.model.head.bias"}
    assert isinstance(m["lm"]["model"]["layers"], list)          # as mlx-lm holds its layers
    m.update(m.parameters())                                      # MLX's own tree functions work on it
    with pytest.raises(TypeError, match="missing"):
        m()
    with pytest.raises(TypeError, match="unexpected"):
        m(x=mx.zeros((1, 2, 8)), y=mx.zeros((1,)))


def test_node_named_like_a_module_method():
    c = compile(_spec([{"type": "Linear", "params": {"out_features": 4}, "id": "update"},
                       {"type": "Linear", "params": {"out_features": 4}, "id": "parameters.train"}], _tok()))
    m = runtime_mlx.build(c.raise_for_errors())
    assert callable(m.update) and callable(m.parameters)
    assert {"update.weight", "parameters.train.weight"} <= set(m.named_parameters())
    assert m(x=mx.zeros((2, 3, 8)))["parameters.train"].shape == (2, 3, 4)


def test_node_under_another_node():
    enc = {"type": "Linear", "params": {"out_features": 8}, "id": "enc"}
    proj = {"type": "Linear", "params": {"out_features": 8}, "id": "enc.proj"}
    for layers in ([enc, proj], [proj, enc]):
        m = runtime_mlx.build(compile(_spec(layers, _tok())).raise_for_errors())
        assert m.module_at("enc") is m.node("enc") and m.module_at("enc.proj") is m.node("enc.proj")
        assert set(m.named_parameters()) == {"enc.weight", "enc.bias", "enc.proj.weight", "enc.proj.bias"}
    clash = _spec([{"type": "LayerNorm", "id": "a"}, {"type": "Linear", "params": {"out_features": 4},
                                                       "id": "a.weight"}], _tok(4))
    with pytest.raises(ValueError, match="collides"):
        runtime_mlx.build(compile(clash).raise_for_errors())


def test_frozen_layers_are_not_trainable():
    from mlx.utils import tree_flatten
    c = compile(_spec([{"type": "Linear", "params": {"out_features": 8}, "id": "a", "frozen": True},
                       {"type": "Linear", "params": {"out_features": 4}, "id": "b"}], _tok())).raise_for_errors()
    m = runtime_mlx.build(c)
    trainable = sum(v.size for _, v in tree_flatten(m.trainable_parameters()))
    assert trainable == c.report["params"]["trainable"] == 8 * 4 + 4
    assert c.report["params"]["frozen"] == 8 * 8 + 8


def test_plan_frees_intermediates_and_skips_dead_nodes():
    lin = lambda i, **kw: {"type": "Linear", "params": {"out_features": 8}, "id": i, **kw}  # noqa: E731
    c = compile(_spec([lin("a"), lin("b"), lin("dead", inputs=["a"])], _tok(), outputs=["b"]))
    m = runtime_mlx.build(c.raise_for_errors())
    assert [step[0] for step in m._plan] == ["a", "b"]
    freed = {i for step in m._plan for i in step[3]}
    assert freed == set(range(m._schedule.n_slots)) - {i for _, i in m._schedule.outputs}


def test_graph_data_round_trip_and_validation():
    c = _tied_lm()
    m = runtime_mlx.from_graph_data(runtime_mlx.to_data(c.graph), seed=3)
    ids = mx.array([[1, 2, 3]])
    assert mx.array_equal(m(input_ids=ids)["lm_head"], runtime_mlx.build(c, seed=3)(input_ids=ids)["lm_head"]).item()
    data = runtime_mlx.to_data(c.graph)
    data["nodes"][1]["params"]["surprise"] = 1
    with pytest.raises(ValueError):
        runtime_mlx.from_graph_data(data)


# --- every example ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,i,spec", CASES, ids=IDS)
def test_names_shapes_and_count(op, i, spec):
    c = get_compiled(spec)
    m = runtime_mlx.build(c, init=False)
    have = {k: tuple(v.shape) for k, v in m.named_parameters().items()}
    want = {k: layout.mlx_shape(w.shape, m.perms[k]) for k, w in m.weight_decls.items() if not w.tied_to}
    assert have == want
    # persistent buffers (W.buffer) are arrays like the parameters in MLX, but not parameters
    assert sum(int(np.prod(s)) for k, s in have.items() if not m.weight_decls[k].buffer) == \
        c.report["params"]["total"]
    t = runtime_torch.build(c, device="meta")
    assert set(have) == set(t.state_dict()) - set(t.ties)


@pytest.mark.parametrize("op,i,spec", CASES, ids=IDS)
def test_torch_weights_into_mlx_and_back(op, i, spec, tmp_path):
    c = get_compiled(spec)
    inputs = make_inputs(c)
    tm = runtime_torch.build(c, seed=1).eval()
    mm = runtime_mlx.build(c, seed=1)
    # the same seed gives the same values
    for name, x in mlx_weights.torch_layout_weights(mm).items():
        np.testing.assert_array_equal(np.array(x), tm.state_dict()[name].numpy(), err_msg=name)
    # torch -> file -> MLX (an MLX model built from another seed)
    torch_weights.save_weights(tm, tmp_path / "t.safetensors")
    m2 = runtime_mlx.build(c, seed=2)
    mlx_weights.load_weights(m2, tmp_path / "t.safetensors")
    ref = run_torch(tm, inputs)
    assert_close(ref, run_mlx(m2, inputs), "torch weights in MLX")
    # MLX -> file -> torch; the two files are byte-identical
    mlx_weights.save_weights(m2, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()
    m3 = runtime_mlx.build(c, seed=3)
    t3 = runtime_torch.build(c, seed=3).eval()
    mlx_weights.save_weights(m3, tmp_path / "m3.safetensors")
    t4 = runtime_torch.build(c, seed=4).eval()
    torch_weights.load_weights(t4, tmp_path / "m3.safetensors")
    assert_close(run_torch(t4, inputs), run_mlx(m3, inputs), "MLX weights in torch")
    assert_close(run_torch(t3, inputs), run_mlx(m3, inputs), "same seed")


def test_merge_image_tokens_matches_torch(tmp_path):
    spec = {"name": "merge", "inputs": [{"name": "text", "kind": "tokens", "shape": ["B", "T", 8]},
                                        {"name": "image", "kind": "tokens", "shape": ["B", 2, 8]},
                                        {"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
            "layers": [{"type": "MergeImageTokens", "params": {"image_token_id": 7},
                        "inputs": ["text", "image", "input_ids"]}]}
    c = get_compiled(spec)
    rng = np.random.RandomState(0)
    inputs = {"text": rng.randn(2, 5, 8).astype(np.float32), "image": rng.randn(2, 2, 8).astype(np.float32),
              "input_ids": np.array([[1, 7, 2, 3, 4], [7, 1, 7, 7, 2]])}    # 4 placeholders, unevenly placed
    assert_close(run_torch(runtime_torch.build(c), inputs), run_mlx(runtime_mlx.build(c), inputs), "merge")
    inputs["input_ids"][0, 1] = 0
    with pytest.raises(ValueError, match="3 placeholder tokens"):
        run_mlx(runtime_mlx.build(c), inputs)


@pytest.mark.parametrize("i", range(len(OP_EXAMPLES["VQVAEDecoder"])))
def test_vqvae_banded_convolution_and_code_search(i, monkeypatch):
    """The memory-bounded paths (row bands, position chunks) compute the same as the torch runtime."""
    from runtime_mlx.ops import generative
    monkeypatch.setattr(generative, "BAND_BYTES", 256)
    c = get_compiled(OP_EXAMPLES["VQVAEDecoder"][i])
    inputs = make_inputs(c)
    assert_close(run_torch(runtime_torch.build(c, seed=1), inputs), run_mlx(runtime_mlx.build(c, seed=1), inputs),
                 "banded")


def test_moe_dispatch_paths_agree():
    """gather_mm (float32, unsorted and sorted) and the per-expert products (other dtypes) compute the same sum."""
    from runtime_mlx.ops import moe
    rng = np.random.RandomState(0)
    for n_tok in (5, 40):                                           # 10 pairs (unsorted), 80 pairs (sorted)
        h = mx.array(rng.randn(n_tok, 8).astype(np.float32))
        gate_up = mx.array(rng.randn(4, 12, 8).astype(np.float32))
        down = mx.array(rng.randn(4, 8, 6).astype(np.float32))
        w, idx = moe.route(h, mx.array(rng.randn(4, 8).astype(np.float32)), 2, True)
        a = moe.experts(h, idx, w, gate_up, down, mx.sigmoid)
        b = moe.experts_grouped(h, idx, w, gate_up, down, mx.sigmoid)
        assert mx.allclose(a, b, atol=1e-5).item()


def test_bfloat16_builds_run():
    for op in ("GQA_MoE_Layer", "TransformerBlock", "PatchEmbed", "VQVAEDecoder"):
        for s in OP_EXAMPLES[op]:
            c = get_compiled(s)
            m = runtime_mlx.build(c, dtype="bfloat16", seed=1)
            out = m(**{k: mx.array(v).astype(mx.bfloat16) if v.dtype == np.float32 else mx.array(v)
                       for k, v in make_inputs(c).items()})
            for k, v in out.items():
                assert v.dtype == mx.bfloat16 and bool(mx.isfinite(v.astype(mx.float32)).all()), (op, k)


# --- layout ----------------------------------------------------------------------------------------------------------
def test_layout_conversion_is_idempotent_and_invertible():
    w = W((8, 3, 2, 5), "conv")
    p = layout.perm_of("Conv2d", "weight", w)
    assert p == (0, 2, 3, 1) and layout.mlx_shape(w.shape, p) == (8, 2, 5, 3)
    x = mx.arange(8 * 3 * 2 * 5).reshape(8, 3, 2, 5)
    y = layout.to_mlx(x, w.shape, p)
    assert y.shape == (8, 2, 5, 3)
    assert mx.array_equal(layout.to_mlx(y, w.shape, p), y)               # already MLX: unchanged
    assert mx.array_equal(layout.to_torch(y, w.shape, p), x)
    assert mx.array_equal(layout.to_torch(x, w.shape, p), x)             # already torch: unchanged
    assert layout.perm_of("Linear", "weight", W((4, 8))) is None
    dw = W((16, 1, 3), "conv")                                           # LFM2's depthwise Conv1d
    assert layout.mlx_shape(dw.shape, layout.perm_of("TransformerBlock", "conv.conv.weight", dw)) == (16, 3, 1)


def test_layout_ambiguous_shape_needs_a_source():
    w = W((4, 3, 3, 3), "conv")                                           # the same shape in both layouts
    p = layout.perm_of("Conv2d", "weight", w)
    x = mx.random.normal((4, 3, 3, 3))
    with pytest.raises(ValueError, match="same in torch and MLX"):
        layout.to_mlx(x, w.shape, p)
    assert mx.array_equal(layout.to_mlx(x, w.shape, p, source="mlx"), x)
    assert mx.array_equal(layout.to_mlx(x, w.shape, p, source="torch"), x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="neither"):
        layout.to_mlx(mx.zeros((4, 9)), w.shape, p)


# --- weights ---------------------------------------------------------------------------------------------------------
def _tied_lm():
    return get_compiled(OP_EXAMPLES["Linear"][2])


def test_load_reports_every_problem_at_once(tmp_path):
    from safetensors.numpy import save_file
    c = get_compiled(OP_EXAMPLES["Conv2d"][0])                             # weight (4, 3, 3, 3) and bias (4,)
    m = runtime_mlx.build(c)
    save_file({"layers.0.weight": np.zeros((4, 3, 3, 2), np.float32), "extra": np.zeros(1, np.float32)},
              tmp_path / "bad.safetensors")
    with pytest.raises(runtime_mlx.WeightsMismatch) as e:
        mlx_weights.load_weights(m, tmp_path / "bad.safetensors")
    assert e.value.missing == ["layers.0.bias (4,)"]
    assert e.value.unexpected == ["extra"]
    assert len(e.value.shapes) == 1 and "layers.0.weight" in e.value.shapes[0]
    save_file({"layers.0.weight": np.zeros((4, 3, 3, 3), np.float16), "layers.0.bias": np.zeros(4, np.float32)},
              tmp_path / "f16.safetensors")
    with pytest.raises(runtime_mlx.WeightsMismatch, match="wrong dtype"):
        mlx_weights.load_weights(m, tmp_path / "f16.safetensors")
    mlx_weights.load_weights(m, tmp_path / "f16.safetensors", cast=True)
    assert m.param("layers.0.weight").dtype == mx.float32
    r = mlx_weights.load_weights(m, tmp_path / "bad.safetensors", strict=False) if False else None
    assert r is None


def test_tied_weights_are_shared(tmp_path):
    c = _tied_lm()
    m = runtime_mlx.build(c, seed=5)
    assert "lm_head.weight" not in m.named_parameters()
    assert m.ties == {"lm_head.weight": "emb.weight"}
    new = mx.random.normal(m.param("emb.weight").shape)
    m.load_weights([("emb.weight", new)])
    ids = mx.array([[1, 2]])
    logits = m(input_ids=ids)["lm_head"]
    assert mx.allclose(logits, new[ids] @ new.T, atol=1e-5).item()
    # a file holding both names loads if they agree, and is refused if they differ
    from safetensors.numpy import save_file
    w = np.array(new)
    save_file({"emb.weight": w, "lm_head.weight": w}, tmp_path / "both.safetensors")
    mlx_weights.load_weights(m, tmp_path / "both.safetensors")
    save_file({"emb.weight": w, "lm_head.weight": w + 1}, tmp_path / "differ.safetensors")
    with pytest.raises(runtime_mlx.WeightsMismatch, match="differ"):
        mlx_weights.load_weights(m, tmp_path / "differ.safetensors")
    save_file({"lm_head.weight": w}, tmp_path / "alias.safetensors")          # the alias alone suffices
    mlx_weights.load_weights(m, tmp_path / "alias.safetensors")


def test_mapped_checkpoint_names():
    c = _tied_lm()
    m = runtime_mlx.build(c)
    t = {"model.embed.weight": np.ones((11, 8), np.float32), "model.rotary.inv_freq": np.ones(4, np.float32)}
    mlx_weights.load_state_dict_mapped(m, t, [(r"^model\.embed\.", "emb."), (r"inv_freq$", None)])
    assert float(m.param("emb.weight").sum()) == 88.0


def test_bfloat16_round_trip(tmp_path):
    c = get_compiled(OP_EXAMPLES["Linear"][0])
    m = runtime_mlx.build(c, dtype="bfloat16", seed=3)
    mlx_weights.save_weights(m, tmp_path / "b.safetensors")
    t = runtime_torch.build(c, dtype="bfloat16", seed=3)
    torch_weights.save_weights(t, tmp_path / "t.safetensors")
    assert (tmp_path / "b.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()


# --- generated code --------------------------------------------------------------------------------------------------
def test_emitted_module_is_deterministic_and_runs(tmp_path):
    from runtime_mlx import emit
    c = _tied_lm()
    emit.write(c, tmp_path / "a", weights=True, seed=3)
    emit.write(c, tmp_path / "b", weights=True, seed=3)
    for f in ("model.py", "report.json", "model.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    text = (tmp_path / "a" / "model.py").read_text()
    assert "import runtime_mlx" in text and "torch" not in text
    spec = importlib.util.spec_from_file_location("gen_mlx_model", tmp_path / "a" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mod.build(init=False)
    runtime_mlx.load_weights(m, tmp_path / "a" / "model.safetensors")
    ids = mx.array([[1, 2, 3]])
    assert mx.array_equal(mod.forward(m, {"input_ids": ids})["lm_head"], m(input_ids=ids)["lm_head"]).item()
    # the weights file is the torch runtime's for the same seed
    from runtime_torch import emit as torch_emit
    torch_emit.write(c, tmp_path / "t", weights=True, seed=3)
    assert (tmp_path / "t" / "model.safetensors").read_bytes() == (tmp_path / "a" / "model.safetensors").read_bytes()


def test_spec_strings_never_become_code(tmp_path):
    from runtime_mlx import emit
    evil = {"name": "x\"\"\"; import os; os.system('echo pwned') #", "inputs": [
        {"name": "x", "kind": "tokens", "shape": ["B", "T", 8]}],
        "layers": [{"id": "a", "type": "Linear", "params": {"out_features": 4,
                                                                           "note": "\"\"\"\nimport os\n"}}]}
    c = compile(evil).raise_for_errors()
    text = emit.source(c)
    import ast
    tree = ast.parse(text)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [a.name for n in imports for a in n.names] == ["runtime_mlx"]


# --- BLAS ------------------------------------------------------------------------------------------------------------
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
CHILD = ("import json, runtime_mlx, mlx.core as mx; mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4))); "
         "maps = open('/proc/self/maps').read(); "
         "print(json.dumps(dict(runtime_mlx.BLAS, mapped='libopenblas' in maps)))")


def _child_blas(**env):
    import json
    import subprocess
    out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux" or not os.path.exists(OPENBLAS), reason="needs Debian's OpenBLAS")
def test_openblas_is_preloaded_on_import_and_can_be_disabled():
    on = _child_blas(OMNIC_MLX_OPENBLAS="1")
    assert on["loaded"] and on["mapped"] and on["path"] == OPENBLAS
    off = _child_blas(OMNIC_MLX_OPENBLAS="0")
    assert not off["loaded"] and "OMNIC_MLX_OPENBLAS=0" in off["reason"]


# --- attention too large to allocate --------------------------------------------------------------------------------
def test_attention_too_large_for_memory_is_a_memory_error_not_a_crash():
    """50,177 tokens (patch 1 over a 224 x 224 image) into attention, batch 64: 645 GB of scores. MLX's CPU backend
    would allocate them whole and end the process on the failed allocation; the runtime says what it needed."""
    from runtime_mlx import kernels
    spec = {"name": "long", "inputs": [{"name": "x", "kind": "image", "shape": ["B", 3, 224, 224]}], "layers": [
        {"id": "patches", "type": "PatchEmbed", "params": {"embed_dim": 8, "patch_size": 1, "cls_token": True}},
        {"id": "block", "type": "TransformerBlock", "params": {"num_heads": 1, "ff_dim": 8, "causal": True}},
        {"id": "head", "type": "ClassificationHead", "params": {"num_classes": 3}}]}
    c = compile(spec)
    assert c.ok, [d.render() for d in c.errors]
    model = c.to_mlx(seed=0)
    need = 64 * 50_177 ** 2 * 4
    assert need > kernels.available_bytes()
    with pytest.raises(MemoryError, match=r"attention over 50,177 queries and 50,177 keys \(1 head, batch 64\) "
                                          r"needs 600\.\d GiB for its scores"):
        model(x=mx.zeros((64, 3, 224, 224)))


def test_the_scores_check_costs_nothing_below_its_threshold(monkeypatch):
    """Below CHECK_SCORES_BYTES no memory is asked for; above it a call that fits runs as before."""
    from runtime_mlx import kernels
    calls = []
    monkeypatch.setattr(kernels, "available_bytes", lambda: calls.append(1) or 1 << 40)
    q = mx.zeros((1, 2, 8, 4))
    mx.eval(kernels.attend(q, q, q, 0.5))
    assert calls == []
    monkeypatch.setattr(kernels, "CHECK_SCORES_BYTES", 0)
    y = kernels.attend(q, q, q, 0.5)
    assert calls == [1] and np.allclose(np.asarray(y), 0.0)
