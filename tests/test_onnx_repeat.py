"""`--target onnx` with each kind of repeated layer traced once (compiler/emit/onnx_repeat.py). For tiny decoders of
each family (sliding and full layers, soft-capping, short convolutions, NoPE layers, longrope, mixed dense / MoE
stacks, latent attention) and vision encoders (SigLIP, DINOv2's LayerScale, DINOv3's 2-D RoPE and registers): the
optimised graph is the plain trace's, node for node and weight for weight; onnxruntime gives the plain graph's
outputs exactly, and torch's within 1e-4 at two lengths and batch sizes other than the traced ones (longrope: within
the lengths its export keeps, up to its original context)."""
from __future__ import annotations

import collections
import hashlib
import os

import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import numpy as np  # noqa: E402

import compiler  # noqa: E402
import runtime_torch  # noqa: E402
from compiler.emit import onnx as emit_onnx  # noqa: E402
from compiler.emit import onnx_convert, onnx_repeat  # noqa: E402
from compiler.importers import spec_from_hf_config  # noqa: E402
from tests.hf_models import DENSE  # noqa: E402
from tests.hf_moe_models import TINY as MOE  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hf_spec(table, name, **change):
    _, C, kw = table[name][:3]
    return spec_from_hf_config(C(**{**kw, **change}).to_dict())


def vit(family, **extra):
    return {"name": family, "inputs": [{"name": "pixels", "kind": "image", "shape": ["B", 3, 32, 32]}],
            "layers": [{"id": "vit", "type": "VisionEncoder", "params": {
                "family": family, "patch_size": 8, "hidden": 16, "layers": 3, "heads": 2, "ff_dim": 32,
                "image_size": 32, **extra}}]}


SPECS = {
    "llama": lambda: hf_spec(DENSE, "llama", num_hidden_layers=3),
    "gemma3": lambda: hf_spec(DENSE, "gemma3", num_hidden_layers=4, layer_types=[
        "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]),
    "gemma2": lambda: hf_spec(DENSE, "gemma2", num_hidden_layers=5),
    "lfm2": lambda: hf_spec(DENSE, "lfm2"),
    "smollm3": lambda: hf_spec(DENSE, "smollm3"),
    "olmo2": lambda: hf_spec(DENSE, "olmo2", num_hidden_layers=3),
    "phi3-longrope": lambda: hf_spec(DENSE, "phi3-longrope", num_hidden_layers=3),
    "llama-dynamic": lambda: {**hf_spec(DENSE, "llama-dynamic", num_hidden_layers=3), "context": 16},  # past its 8
    "qwen3_moe_mixed": lambda: hf_spec(MOE, "qwen3_moe_mixed", num_hidden_layers=4),
    "deepseek_v3": lambda: hf_spec(MOE, "deepseek_v3", num_hidden_layers=3),
    "siglip": lambda: vit("siglip"),
    "dinov2": lambda: vit("dinov2"),
    "dinov3": lambda: vit("dinov3", registers=2),
}


def export(c, model, trace_once: bool):
    """The optimised onnx_ir model of `model` (its kinds of repeated layers traced once or not), and the kinds."""
    wrapped = emit_onnx.Positional(model)
    example = emit_onnx.example_inputs(c.graph, emit_onnx.sizes(c, emit_onnx.EXPORT_SIZES))
    kinds = onnx_repeat.repeated(c.graph, model) if trace_once else []
    proto, shapes, _ = emit_onnx.export(wrapped, example, emit_onnx.dynamic_shapes(c.graph, c), kinds=kinds)
    onnx_convert.optimise(proto)
    return proto, shapes, kinds


def canonical(model) -> tuple:
    """The graph up to the names of its intermediate values: each node as (op, attributes, its inputs' canonical
    forms), each initializer as (its name if it is a tensor of the model, shape, dtype, bytes), in a multiset; and
    the outputs."""
    form: dict[int, str] = {}
    for v in model.graph.inputs:
        form[id(v)] = f"input {v.name}"
    for name, v in model.graph.initializers.items():
        data = np.ascontiguousarray(v.const_value.numpy())
        own = name if name.startswith("model.") else ""          # the model's own weights; not folded constants
        form[id(v)] = f"init {own} {data.shape} {data.dtype} {hashlib.sha1(data.tobytes()).hexdigest()}"
    nodes = collections.Counter()
    for n in model.graph:
        attrs = sorted((k, str(a.value)) for k, a in n.attributes.items())
        key = hashlib.sha1(repr((n.domain, n.op_type, attrs, [form[id(v)] if v is not None else None
                                                           for v in n.inputs])).encode()).hexdigest()
        nodes[key] += 1
        for i, v in enumerate(n.outputs):
            form[id(v)] = f"{key}:{i}"
    return nodes, [(v.name, form[id(v)]) for v in model.graph.outputs]


def perturbed(c):
    """A seeded build with every tensor perturbed (norms away from ones): no two weights of a layer are equal."""
    model = runtime_torch.build(c, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def ort_outputs(proto, path, inputs):
    onnx_convert.save(proto, path, external=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: inputs[i.name].numpy() for i in sess.get_inputs()})


@pytest.mark.parametrize("family", sorted(SPECS))
def test_traced_once_is_the_plain_graph_and_matches_torch(family, tmp_path):
    c = compiler.compile(SPECS[family]()).raise_for_errors()
    model = perturbed(c)
    once, shapes, kinds = export(c, model, trace_once=True)
    assert kinds and all(len(names) >= 2 for names in kinds)        # something is traced once
    plain, _, _ = export(c, model, trace_once=False)
    assert canonical(once) == canonical(plain)
    kept = emit_onnx.dim_ranges(c.graph, shapes)
    assert {"batch", "seq"} & set(kept) and not any(isinstance(v, int) for v in kept.values())   # all dynamic
    trace = emit_onnx.sizes(c, emit_onnx.EXPORT_SIZES)
    # every length to the spec's context: longrope and dynamic scaling past their original 8 too (rope frequencies
    # chosen by tensors while exporting, not by a branch that would fix the length to one side of 8)
    assert ((kept.get("seq") or {}).get("max") or 16) >= 16
    for b, t in ((1, 5), (3, 11)):                        # traced at batch 2, length 6
        env = emit_onnx.sizes(c, {"B": b, "T": t, "F": 2})
        assert (env["B"], env.get("T")) != (trace["B"], trace.get("T"))
        inputs = emit_onnx.example_inputs(c.graph, env, seed=b)
        want = emit_onnx.reference(emit_onnx.Positional(model), inputs)
        got = ort_outputs(once, str(tmp_path / f"once{b}.onnx"), inputs)
        same = ort_outputs(plain, str(tmp_path / f"plain{b}.onnx"), inputs)
        for g, s, w in zip(got, same, want):
            assert g.shape == w.shape
            assert np.array_equal(g, s)
            assert np.allclose(g, w, atol=1e-4, rtol=1e-4), float(np.max(np.abs(g - w)))


def test_kinds_of_nanovlm():
    """nanoVLM original_small (shrunk to 4 decoder blocks): the vision blocks are one kind, the decoder blocks after
    the first another (the first reads unpositioned tokens but is the same layer: one kind of 4)."""
    from tests.shrink import SHRINK
    path = "specs/nanovlm/original_small.json"
    depth = next(k for k in SHRINK[path] if k.endswith(".depth"))
    c = compiler.compile(os.path.join(ROOT, path), overrides={**SHRINK[path], depth: 4}).raise_for_errors()
    model = runtime_torch.build(c, seed=0)
    assert onnx_repeat.repeated(c.graph, model) == [
        [f"vision_encoder.blocks.{i}" for i in range(2)], [f"decoder.blocks.{i}" for i in range(4)]]


def test_a_layer_of_other_params_is_another_kind():
    c = compiler.compile(SPECS["gemma3"]()).raise_for_errors()
    kinds = onnx_repeat.repeated(c.graph, runtime_torch.build(c, seed=0))
    assert kinds == [[f"lm.model.layers.{i}" for i in range(3)]]       # the full-attention layer 3 is alone


def test_traced_once_restores_the_model():
    c = compiler.compile(SPECS["llama"]()).raise_for_errors()
    model = runtime_torch.build(c, seed=0)
    kinds = onnx_repeat.repeated(c.graph, model)
    with onnx_repeat.traced_once(model, kinds):
        assert not any(p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_the_runtimes_read_neither_layer_index_nor_positioned():
    """What `repeated` leaves out of a kind's key is compiler metadata: no runtime code reads it."""
    for runtime in ("runtime_torch", "runtime_common", "runtime_mlx"):
        for folder, _, files in os.walk(os.path.join(ROOT, runtime)):
            for f in files:
                if f.endswith(".py"):
                    text = open(os.path.join(folder, f), encoding="utf-8").read()
                    assert "layer_index" not in text and "positioned" not in text, (
                        f"{os.path.join(folder, f)} reads layer_index or positioned: add it to the key of "
                        "compiler/emit/onnx_repeat.repeated, or layers that differ in it would share one trace")


def test_a_failed_trace_once_falls_back_to_every_copy(tmp_path, monkeypatch):
    """Where tracing once fails, the export traces every copy and says why in onnx.json."""
    import json

    def broken(self, *xs):
        raise RuntimeError("no subgraph today")
    monkeypatch.setattr(onnx_repeat._Call, "__call__", broken)
    c = compiler.compile(SPECS["llama"]()).raise_for_errors()
    emit_onnx.write(c, str(tmp_path))
    info = json.loads((tmp_path / "onnx.json").read_text())
    assert info["traced_once"] == {} and "no subgraph today" in info["traced_once_failed"]
