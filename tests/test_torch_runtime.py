"""The torch runtime: every op built and run against the compiler's declarations, weights, init, emit, compile.

Registry-wide tests are parametrised over `compiler.registry.all_ops()`: an op without a torch implementation or
without an example in tests/op_examples.py fails here, loudly, by name.
"""
from __future__ import annotations

import ast
import importlib.util
import io
import os
import tokenize

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import compiler
import runtime_torch as rt
from compiler import registry as ops
from compiler.cost import node_weights
from compiler.ir import TensorType
from runtime_torch import emit, registry as impls
from runtime_torch.weights import WeightsMismatch, load_state_dict_mapped, load_weights, save_weights
from runtime_common.inputs import example_inputs
from tests.op_examples import ENV, OP_EXAMPLES, ids, layer, spec, tokens

OPS = [n for n in ops.all_ops() if n != "Input"]
NODE_OPS = [n for n in OPS if not ops.get(n).composite]      # composites expand into other layers: no module


def compiled(s: dict):
    c = compiler.compile(s)
    assert c.ok, "\n".join(d.render() for d in c.errors)
    return c


def make_inputs(graph, seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in example_inputs(graph, ENV, seed).items()}


def tiny_lm(**over):
    return compiled(spec([layer("Embedding", {"num_embeddings": 11, "embedding_dim": 8}, id="emb"),
                          layer("RMSNorm", id="norm"),
                          layer("Linear", {"out_features": 16}, id="up"),
                          layer("Activation", {"fn": "gelu"}),
                          layer("Linear", {"out_features": 8}, id="down"),
                          layer("Linear", {"out_features": 11, "bias": False, "tie": "emb"}, id="lm_head")],
                         [ids()], **over))


# --- registry-wide ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", NODE_OPS)
def test_op_has_torch_implementation(op):
    if op not in impls.all_impls():
        pytest.fail(f"{op} has no torch implementation (@implements({op!r}) in runtime_torch/ops/)")


def test_every_implementation_is_a_compiler_op():
    assert set(impls.all_impls()) <= set(ops.all_ops())


@pytest.mark.parametrize("op", OPS)
def test_op_example_matches_compiler(op):
    if op not in OP_EXAMPLES:
        pytest.fail(f"add a tiny spec for {op} to tests/op_examples.py")
    examples = OP_EXAMPLES[op] if isinstance(OP_EXAMPLES[op], list) else [OP_EXAMPLES[op]]
    for s in examples:
        c = compiled(s)
        g = c.graph
        if ops.get(op).composite:
            assert any(isinstance(l, dict) and l.get("type") == op for l in s["layers"]), f"no {op} in an example"
        else:
            assert any(n.op == op for n in g.nodes()), f"an example for {op} does not contain it"
        model = rt.build(c, seed=0)
        assert sum(p.numel() for _, p in model.named_parameters()) == c.report["params"]["total"]
        declared = {k: tuple(w.shape) for n in g.nodes() for k, w in node_weights(n).items()}
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == declared
        with torch.no_grad():
            out = model(**make_inputs(g))
        assert list(out) == model.output_names
        for (n, o), key in zip(g.outputs, model.output_names):
            want = tuple(d.eval(ENV) for d in g[n].outputs[o].shape)
            assert tuple(out[key].shape) == want, f"{key}: torch {tuple(out[key].shape)}, compiler {want}"
            assert torch.isfinite(out[key]).all()
        again = rt.from_graph_data(rt.to_data(g), seed=0)                      # what generated code rebuilds
        assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


# --- registry --------------------------------------------------------------------------------------------------------
def test_declared_handles_name_declared_tensors_and_are_kept(op_case):
    """An op's `handles` (what both runtimes' forward reads) names only tensors its declaration holds, and the torch
    node keeps exactly those: the module at the name, or (module, attribute) of the tensor there."""
    c = compiled(op_case[2])
    model = c.to_torch(device="meta")
    for n in c.graph.nodes():
        if n.op == "Input" or ops.get(n.op).composite:
            continue
        decl, mod = ops.get(n.op).weights(n.params), model.node(n.name)
        for attr, name in ops.get(n.op).handles(n.params).items():
            kept = getattr(mod, attr)
            if name is None:
                assert kept is None, (n.name, attr)
                continue
            if name in decl:                        # a tensor: (module, attribute)
                assert getattr(*kept) is mod.t(name), (n.name, attr, name)
            else:                                   # a module holding declared tensors
                assert any(k.startswith(name + ".") for k in decl), (n.name, attr, name)
                assert kept is mod.at(name), (n.name, attr, name)


def test_duplicate_registration_refused():
    rt.get("Linear")                  # loaded first: in a fresh worker the registration would otherwise come first
    with pytest.raises(ValueError, match="two torch implementations"):
        @rt.implements("Linear")
        class Again(torch.nn.Module):
            pass
    with pytest.raises(TypeError):
        rt.implements("Nothing")(lambda p, t: None)
    with pytest.raises(KeyError, match="no torch implementation"):
        rt.get("NoSuchOp")


# --- the model -------------------------------------------------------------------------------------------------------
def test_nesting_ties_and_inputs():
    c = compiled(spec([layer("Linear", {"out_features": 8, "bias": False}, id="lm.model.layers", repeat=2),
                       layer("Linear", {"out_features": 4}, id="lm.model.head")], [tokens(8)]))
    m = rt.build(c)
    assert isinstance(m.module_at("lm.model.layers"), rt.model.Container)
    assert set(m.state_dict()) == {"lm.model.layers.0.weight", "lm.model.layers.1.weight",
                                   "lm.model.head.weight", "lm.model.head.bias"}
    lm = tiny_lm()
    m = rt.build(lm)
    assert m.lm_head.weight is m.emb.weight and m.ties == {"lm_head.weight": "emb.weight"}
    m.to(torch.float64)
    assert m.lm_head.weight is m.emb.weight and m.emb.weight.dtype == torch.float64
    with pytest.raises(TypeError, match="missing"):
        m()
    with pytest.raises(TypeError, match="unexpected"):
        m(input_ids=torch.zeros(1, 2, dtype=torch.long), x=torch.zeros(1))


def test_node_named_like_a_module_attribute():
    m = rt.build(compiled(spec([layer("Linear", {"out_features": 4}, id="train"),
                                layer("Linear", {"out_features": 4}, id="to.cuda")], [tokens(8)])))
    assert callable(m.train) and "train.weight" in m.state_dict() and "to.cuda.weight" in m.state_dict()
    assert m(x=torch.randn(2, 3, 8))["to.cuda"].shape == (2, 3, 4)


def test_node_under_another_node():
    enc, proj = layer("Linear", {"out_features": 8}, id="enc"), layer("Linear", {"out_features": 8}, id="enc.proj")
    for layers in ([enc, proj], [proj, enc]):                                  # the parent node first, or last
        m = rt.build(compiled(spec(layers, [tokens(8)])))
        assert m.module_at("enc") is m.node("enc") and m.module_at("enc.proj") is m.node("enc.proj")
        assert set(m.state_dict()) == {"enc.weight", "enc.bias", "enc.proj.weight", "enc.proj.bias"}
    clash = spec([layer("LayerNorm", id="a"), layer("Linear", {"out_features": 4}, id="a.weight")], [tokens(4)])
    with pytest.raises(ValueError, match="collides"):
        rt.build(compiled(clash))


def test_shared_modules_import_no_framework():
    """compiler/graph_data.py and runtime_common/ (what both runtimes share) import neither torch, mlx nor numpy
    at module level: runtime_common/init.py imports torch inside `draw` only."""
    root = os.path.dirname(rt.__path__[0])
    banned = ("torch", "mlx", "numpy", "safetensors", "runtime_torch", "runtime_mlx")
    shared = sorted(f for f in os.listdir(os.path.join(root, "runtime_common")) if f.endswith(".py"))
    files = ["compiler/graph_data.py"] + [f"runtime_common/{f}" for f in shared]
    for f in files:
        tree = ast.parse(open(os.path.join(root, f)).read())
        for n in tree.body:
            if isinstance(n, ast.ImportFrom):
                assert n.level == 0 and n.module.split(".")[0] not in banned, (f, n.module)
            elif isinstance(n, ast.Import):
                assert all(a.name.split(".")[0] not in banned for a in n.names), f


def test_plan_frees_intermediates_and_skips_dead_nodes():
    c = compiled(spec([layer("Linear", {"out_features": 8}, id="a"), layer("Linear", {"out_features": 8}, id="b"),
                       layer("Linear", {"out_features": 8}, id="dead", inputs=["a"])], [tokens(8)],
                      outputs=["b"]))
    m = rt.build(c)
    assert [step[0] for step in m._plan] == [m.a, m.b]
    freed = {i for step in m._plan for i in step[3]}
    assert freed == set(range(m._schedule.n_slots)) - {i for _, i in m._schedule.outputs}


def test_multi_output_op():
    from compiler.ops.basic import ActivationParams
    from compiler.registry import Op, Slot

    class Split(Op):
        name, Params, slots, outputs = "TestSplit", ActivationParams, (Slot("x", ("tokens",)),), ("lo", "hi")

        @classmethod
        def shape(cls, p, ins):
            t = ins[0]
            half = t.with_shape(t.shape[:-1] + (t.width // 2,))
            return {"lo": half, "hi": half}

    class SplitImpl(torch.nn.Module):
        def __init__(self, p, in_types):
            super().__init__()

        def forward(self, x):
            lo, hi = x.chunk(2, -1)
            return {"lo": lo, "hi": hi}

    ops.register(Split)
    impls._IMPLS["TestSplit"] = SplitImpl
    try:
        c = compiled(spec([layer("TestSplit", id="s"), layer("Linear", {"out_features": 3}, id="p", inputs=["s.hi"])],
                          [tokens(8)], outputs=["p", "s.lo"]))
        m = rt.build(c)
        x = torch.randn(2, 5, 8)
        out = m(x=x)
        assert list(out) == ["p", "s.lo"] and torch.equal(out["s.lo"], x[..., :4])
        assert torch.allclose(out["p"], m.p(x[..., 4:]))
    finally:
        del ops._OPS["TestSplit"], impls._IMPLS["TestSplit"]


def test_torch_compile_fullgraph():
    m = rt.build(tiny_lm())
    x = torch.randint(0, 11, (2, 5))
    ref = m(input_ids=x)["lm_head"]
    cm = torch.compile(m, fullgraph=True, backend="aot_eager")
    y = cm(input_ids=x)["lm_head"]
    torch.testing.assert_close(y, ref)
    y.sum().backward()
    assert m.emb.weight.grad is not None
    x = torch.randint(0, 11, (3, 7))                                           # a new shape: dynamic recompile
    torch.testing.assert_close(cm(input_ids=x)["lm_head"], m(input_ids=x)["lm_head"])


# --- op semantics ----------------------------------------------------------------------------------------------------
def _impl(op: str, params: dict, *in_types: TensorType):
    return rt.get(op)(ops.get(op).Params.model_validate(params), list(in_types))


def test_rmsnorm_matches_transformers_bitwise():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = torch.randn(2, 5, 16).to(torch.bfloat16)
    for offset, ref in ((0.0, LlamaRMSNorm(16, eps=1e-6)), (1.0, Gemma3RMSNorm(16, eps=1e-6))):
        ref = ref.to(torch.bfloat16)
        ours = _impl("RMSNorm", {"dim": 16, "eps": 1e-6, "offset": offset}).to(torch.bfloat16)
        with torch.no_grad():
            ref.weight.normal_()
            ours.weight.copy_(ref.weight)
        assert torch.equal(ours(x), ref(x)), offset


def test_activations_and_layout_ops():
    x = torch.randn(2, 5, 8)
    gelu, tanh = _impl("Activation", {"fn": "gelu"}), _impl("Activation", {"fn": "gelu_tanh"})
    assert torch.equal(gelu(x), torch.nn.functional.gelu(x)) and not torch.equal(gelu(x), tanh(x))
    fmap = torch.randn(2, 3, 4, 5)                                    # (B, C, H, W)
    flat = _impl("Flatten", {})(fmap)                                 # (B, H*W, C)
    assert torch.equal(flat[:, 1 * 5 + 2], fmap[:, :, 1, 2])
    grid = TensorType.make(["B", 1 + 20, 3], "tokens", grid=(4, 5), prefix=1)
    seq = torch.cat([torch.randn(2, 1, 3), flat], 1)                 # CLS + grid tokens
    assert torch.equal(_impl("Reshape", {"to": "map"}, grid)(seq), fmap)
    assert torch.equal(_impl("Reshape", {"to": "grid_tokens"}, grid)(seq)[:, 1, 2], fmap[:, :, 1, 2])
    assert torch.equal(_impl("Select", {"tokens": "cls"}, grid)(seq), seq[:, 0])
    assert torch.equal(_impl("Select", {"tokens": "patches"}, grid)(seq), flat)
    assert torch.equal(_impl("Select", {"tokens": "prefix"}, grid)(seq), seq[:, :1])
    # channels: each token holds C x s x s values, C outermost -> (B, C, h*s, w*s)
    t = TensorType.make(["B", 6, 2 * 2 * 2], "tokens", grid=(2, 3))
    v = torch.randn(2, 6, 8)
    out = _impl("Reshape", {"to": "map", "channels": 2}, t)(v)
    assert out.shape == (2, 2, 4, 6)
    assert out[1, 1, 2 * 1 + 0, 2 * 2 + 1] == v[1, 1 * 3 + 2, 1 * 4 + 0 * 2 + 1]
    a, b = TensorType.make(["B", 4, 4, 4], "image"), TensorType.make(["B", 2, 4, 4], "image")
    assert _impl("Concat", {"axis": "channels"}, a, b)(torch.randn(2, 4, 4, 4), torch.randn(2, 2, 4, 4)).shape[1] == 6


# --- initialisation --------------------------------------------------------------------------------------------------
def test_init_is_seeded_by_name_only():
    a = rt.build(tiny_lm(), seed=3)
    b = rt.build(tiny_lm(), seed=3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.emb.weight, rt.build(tiny_lm(), seed=4).emb.weight)
    other = rt.build(compiled(spec([layer("Linear", {"out_features": 8}, id="extra"),
                                    layer("Linear", {"out_features": 16}, id="up")], [tokens(8)])), seed=3)
    assert torch.equal(other.up.weight, a.up.weight)                       # same name, same values
    half = rt.build(tiny_lm(), seed=3, dtype=torch.bfloat16)
    assert torch.equal(half.up.weight, a.up.weight.to(torch.bfloat16))
    assert abs(a.emb.weight.std().item() - 0.02) < 0.01
    assert torch.equal(a.norm.weight, torch.ones(8)) and torch.equal(a.up.bias, torch.zeros(16))
    ln = rt.build(compiled(spec([layer("LayerNorm"), layer("RMSNorm", {"offset": 1.0})], [tokens(4)])))
    assert torch.equal(ln.state_dict()["layers.0.bias"], torch.zeros(4))
    assert torch.equal(ln.state_dict()["layers.1.weight"], torch.zeros(4))


def test_meta_build_allocates_nothing():
    big = compiled(spec([layer("Linear", {"out_features": 100_000}, id="a"),
                         layer("Linear", {"out_features": 100_000}, id="b")], [tokens(100_000)]))
    m = rt.build(big, device="meta", dtype="bfloat16")                     # 20 G parameters
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in m.parameters())
    assert sum(p.numel() for p in m.parameters()) == big.report["params"]["total"]


# --- weights ---------------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    path = tmp_path / "w.safetensors"
    a = rt.build(tiny_lm(), seed=1)
    save_weights(a, path)
    with safe_open(str(path), "pt") as f:
        assert "lm_head.weight" not in f.keys() and "emb.weight" in f.keys()
    b = rt.build(tiny_lm(), seed=2)
    assert load_weights(b, path).missing == []
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert b.lm_head.weight is b.emb.weight
    m = rt.build(tiny_lm(), device="meta")
    load_weights(m, path)
    assert not m.emb.weight.is_meta and m.lm_head.weight is m.emb.weight
    assert torch.equal(m.up.weight, a.up.weight)


def test_load_reports_every_problem(tmp_path):
    model = rt.build(tiny_lm())
    sd = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    del sd["norm.weight"], sd["up.bias"]                                       # missing
    sd["stray.weight"] = torch.zeros(3)                                        # unexpected
    sd["up.weight"] = torch.zeros(8, 16)                                       # transposed
    sd["down.weight"] = torch.zeros(9, 16)                                     # wrong size
    sd["down.bias"] = sd["down.bias"].to(torch.bfloat16)                       # wrong dtype
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    before = model.emb.weight.clone()
    with pytest.raises(WeightsMismatch) as e:
        load_weights(model, path)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "5 problems" not in msg and "6 problems" in msg
    for s in ("norm.weight (8,)", "up.bias (16,)", "stray.weight", "up.weight: checkpoint (8, 16), model (16, 8)",
              "down.weight: checkpoint (9, 16)", "down.bias: checkpoint bfloat16, model float32"):
        assert s in msg, msg
    assert torch.equal(model.emb.weight, before)                              # nothing copied
    with pytest.raises(WeightsMismatch) as e:                                  # shapes raise even when not strict
        load_weights(model, path, strict=False, cast=True)
    assert "missing" not in str(e.value) and "wrong dtype" not in str(e.value)
    ok = {k: v for k, v in sd.items() if k not in ("up.weight", "down.weight")}
    save_file(ok, str(path))
    res = load_weights(model, path, strict=False, cast=True)
    assert res.missing == ["norm.weight (8,)", "up.weight (16, 8)", "up.bias (16,)", "down.weight (8, 16)"]
    assert res.unexpected == ["stray.weight"]


def test_load_mapped_checkpoint():
    model = rt.build(tiny_lm(), seed=5)
    ckpt = {k.replace("emb.", "model.embed_tokens.").replace("norm.", "model.norm."): v.clone()
            for k, v in model.state_dict().items()}
    ckpt["model.rotary_emb.inv_freq"] = torch.zeros(2)
    target = rt.build(tiny_lm(), seed=6)
    mapping = [(r"^model\.embed_tokens\.", "emb."), (r"^model\.norm\.", "norm."), (r"rotary_emb", None)]
    load_state_dict_mapped(target, ckpt, mapping)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in model.state_dict().items())
    ckpt["lm_head.weight"] = torch.zeros(11, 8)                                # tied copies must agree
    with pytest.raises(WeightsMismatch, match="differ"):
        load_state_dict_mapped(target, ckpt, mapping)
    with pytest.raises(WeightsMismatch, match="both map to emb.weight"):
        load_state_dict_mapped(target, {"a": torch.zeros(11, 8), "b": torch.zeros(11, 8)}, [(r"^[ab]$", "emb.weight")])


# --- emit ------------------------------------------------------------------------------------------------------------
def _load_generated(path):
    sp = importlib.util.spec_from_file_location("generated_model", path)
    mod = importlib.util.module_from_spec(sp)
    sp.loader.exec_module(mod)
    return mod


def test_emit_is_byte_identical_and_runs(tmp_path):
    files = ("model.py", "report.json", "model.safetensors")
    for d in ("a", "b"):
        emit.write(tiny_lm(), tmp_path / d, weights=True, seed=7)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    gen = _load_generated(tmp_path / "a" / "model.py")
    m = gen.build(init=False)
    load_weights(m, tmp_path / "a" / "model.safetensors")
    ref = rt.build(tiny_lm(), seed=7)
    x = {"input_ids": torch.randint(0, 11, (2, 5))}
    torch.testing.assert_close(m(**x), ref(**x))
    torch.testing.assert_close(gen.forward(m, x), ref(**x))


PAYLOADS = ['"""; __import__("os").system("echo pwned") #', "'\n__import__('os')\n'", "\\' + exec('1') + \\'",
            "\r\n\t\x00 }]) ; raise SystemExit"]


def test_emit_never_turns_spec_strings_into_code(tmp_path):
    layers = [layer("Linear", {"out_features": 4, "note": p}, id=f"l{i}") for i, p in enumerate(PAYLOADS)]
    s = spec(layers, [dict(tokens(4, name=PAYLOADS[0]), note=PAYLOADS[1])], name=PAYLOADS[2])
    s["explanation"] = s["note"] = PAYLOADS[3]
    emit.write(compiled(s), tmp_path)
    text = (tmp_path / "model.py").read_text()
    tree = ast.parse(text)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert set(PAYLOADS) <= strings                                            # present, as data
    for n in ast.walk(tree):                                                   # and only as data
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            n.value = ""
    code = ast.unparse(tree)
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    for bad in ("__import__", "exec", "system", "SystemExit", "pwned"):
        assert bad not in code and not any(bad in c for c in comments)
    gen = _load_generated(tmp_path / "model.py")
    assert gen.NAME == PAYLOADS[2] and gen.GRAPH["nodes"][1]["params"]["note"] == PAYLOADS[0]
    assert gen.build()(**{PAYLOADS[0]: torch.randn(2, 5, 4)})["l3"].shape == (2, 5, 4)
    bad_id = spec([layer("Linear", {"out_features": 4}, id="a'); __import__('os')")], [tokens(4)])
    assert not compiler.compile(bad_id).ok


def test_graph_data_is_validated_again():
    data = rt.to_data(tiny_lm().graph)
    data["nodes"][2]["params"]["dim"] = 9                                      # a width the graph does not have
    with pytest.raises(ValueError, match="recorded outputs|width|dim"):
        rt.from_graph_data(data)
    data = rt.to_data(tiny_lm().graph)
    data["nodes"][3]["params"]["surprise"] = 1
    with pytest.raises(ValueError):
        rt.from_graph_data(data)


def test_frozen_layers_get_no_gradients():
    import compiler
    import runtime_torch as rt
    spec = {"name": "f", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", 3, 8]}], "layers": [
        {"id": "a", "type": "Linear", "params": {"out_features": 8}, "frozen": True},
        {"id": "b", "type": "Linear", "params": {"out_features": 4}}]}
    c = compiler.compile(spec)
    m = rt.build(c)
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable == c.report["params"]["trainable"] == 36


def test_progress_is_quiet_off_a_terminal_and_shown_on_one(monkeypatch, capsys):
    """Long work shows a bar on a terminal only (tests and CI logs stay clean)."""
    import io
    from runtime_common import progress
    items = ["a", "b", "c"]
    assert list(progress.track(items, "x", [1, 1, 1])) == items           # stderr is not a TTY here: plain
    assert capsys.readouterr().err == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True
    fake = Tty()
    monkeypatch.setattr(progress.sys, "stderr", fake)
    monkeypatch.setenv("OMNIC_PROGRESS", "1")
    monkeypatch.setattr(progress, "_console", lambda: __import__("rich.console").console.Console(file=fake,
                                                                                                  force_terminal=True))
    assert list(progress.track(items, "initialising weights", [1, 1, 1])) == items
    assert "initialising weights" in fake.getvalue()
