"""Quantised MLX builds (`mlx.nn.quantize`) and mlx-lm's quantised folders.

  * bytes: what the quantised model holds (packed weights, scales, biases and the kept bf16 tensors, counted from the
    live arrays and from the saved file's header) equal the report's `memory.weights[mlx-*]` exactly;
  * the saved file loads back to the same logits; greedy decoding runs;
  * a folder written by mlx-lm's own code (`quantize_model`, `save_model`, `save_config`) from a tiny random llama
    loads into omnic-MLX: the same names, scales and biases, and the same logits as mlx-lm's model;
  * tensors that mlx.nn.quantize cannot reach (stacked MoE experts) are a QuantError naming the layer.
"""
from __future__ import annotations

import json

import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from compiler import compile
from compiler.quantise import QuantError, quant_plan
from runtime_mlx import generate as mlx_generate
from runtime_mlx import quantize as mq
from runtime_torch.quantize import file_bytes
from tests.quant_cases import spec

IDS = mx.array([[5, 17, 3, 42, 8, 61, 29]])


@pytest.mark.parametrize("bits,group,fmt", [("4", None, "mlx-4bit"), ("8", 32, "mlx-8bit-g32"),
                                            ("4", 128, "mlx-4bit-g128")])
@pytest.mark.parametrize("tie", [False, True])
def test_mlx_bytes_equal_the_report(bits, group, fmt, tie, tmp_path):
    plan = quant_plan(compile(spec(tie=tie)).raise_for_errors(), "mlx", bits, group)
    c = compile(spec(tie=tie), format=plan.fmt.name).raise_for_errors()
    assert plan.fmt.name == fmt
    ref = runtime_mlx.build(c, seed=0)
    model = mq.quantise(runtime_mlx.build(c, seed=0), plan)
    held = {n for n, x in tree_flatten(model.parameters()) if n.endswith(".scales")}
    assert held == {n.removesuffix(".weight") + ".scales" for n in plan.quantised}
    report = c.report["memory"]["weights"][fmt]
    assert mq.stored_bytes(model) == report == plan.expected_bytes
    path = tmp_path / "q.safetensors"
    mq.save_quantised(model, path, plan)
    assert file_bytes(path) == report
    got = model(input_ids=IDS)["lm.lm_head"]
    want = ref(input_ids=IDS)["lm.lm_head"]
    err = mx.abs(got.astype(mx.float32) - want).max().item()
    assert 0 < err < (0.3 if bits == "4" else 0.1) * mx.abs(want).max().item()
    back = mq.load_quantised(c, path)
    assert mx.array_equal(back(input_ids=IDS)["lm.lm_head"], got).item()
    assert mlx_generate.generate(model, IDS, 4).shape == (1, IDS.shape[1] + 4)


def test_mlx_build_cli_prints_the_built_format(tmp_path, capsys):
    from compiler.cli import main
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**spec(), "budget": {"vram": "1GiB", "format": "bf16"}}))
    with pytest.raises(SystemExit) as e:
        main(["build", str(path), "--target", "mlx", "--quantize", "4", "--group-size", "32", "-o",
              str(tmp_path / "out")])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "memory.weights[mlx-4bit-g32]" in out and "budget memory.inference[mlx-4bit-g32]" in out
    c = compile(spec(), format="mlx-4bit-g32").raise_for_errors()
    assert file_bytes(tmp_path / "out" / "model.safetensors") == c.report["memory"]["weights"]["mlx-4bit-g32"]


def test_tensors_mlx_nn_quantize_cannot_reach_are_named():
    """The runtime's own check (behind the plan's): stacked experts are bare arrays in a box, not a weight."""
    from compiler.quantise import QuantPlan, Scheme
    from compiler.formats import FORMATS
    moe = spec("qwen2_moe", ff_dim=None, num_experts=4, top_k=2, expert_dim=64, shared_expert_dim=64)
    c = compile(moe).raise_for_errors()
    name = "lm.model.layers.0.mlp.experts.gate_up_proj"
    decl = runtime_mlx.build(c, init=False)
    plan = QuantPlan(Scheme("mlx", "4", "mlx-4bit", "mlx.nn.quantize (affine)", 4), FORMATS["mlx-4bit"],
                     quantised={name: decl.weight_decls[name]}, nodes={name: "lm.model.layers.0"})
    with pytest.raises(QuantError, match=r"GQA_MoE_Layer 'lm.model.layers.0': mlp.experts.gate_up_proj"):
        mq.check_holders(decl, plan)


def test_mlx_lm_quantised_folder_loads(tmp_path):
    from mlx_lm.models import llama
    from mlx_lm.utils import quantize_model, save_config, save_model
    from transformers import LlamaConfig
    cfg = LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=False).to_dict()
    cfg = {k: v for k, v in cfg.items() if v is not None}
    args = llama.ModelArgs.from_dict(cfg)
    theirs = llama.Model(args)
    mx.random.seed(0)
    theirs.update(tree_unflatten([(n, (mx.random.normal(x.shape) * 0.2 + (1.0 if "norm" in n else 0.0)).astype(
        mx.bfloat16)) for n, x in tree_flatten(theirs.parameters())]))
    theirs, qcfg = quantize_model(theirs, cfg, 64, 4)
    save_model(tmp_path, theirs)
    save_config(qcfg, config_path=tmp_path / "config.json")
    compiled, ours = mq.load_mlx_lm(tmp_path)
    names = {n.removeprefix("lm."): x for n, x in tree_flatten(ours.parameters())}
    files = mx.load(str(tmp_path / "model.safetensors"))
    assert set(names) == set(files)
    assert all(mx.array_equal(names[k], files[k]).item() for k in files)
    from compiler.importers import hf
    c4 = compile(hf.spec_from_hf_config(cfg), format="mlx-4bit").raise_for_errors()
    assert file_bytes(tmp_path / "model.safetensors") == mq.stored_bytes(ours) == c4.report["memory"]["weights"][
        "mlx-4bit"]
    a, b = ours(input_ids=IDS)["lm.lm_head"], theirs(IDS)
    assert mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max().item() <= 0.02 * mx.abs(b).max().item()


@pytest.mark.parametrize("target,q", [("mlx", "4"), ("torch", "int8")])
@pytest.mark.parametrize("path", ["specs/nanovlm/original_small.json", "specs/nanovlm/default.json",
                                  "specs/nanovlm/dinov3_gemma.json"])
def test_shipped_specs_shrunk_quantise_to_the_report(path, target, q):
    """The shipped VLMs (shrunk): every quantised tensor replaced, a forward runs, bytes = the report's."""
    import torch
    import runtime_torch
    from runtime_torch import quantize as tq
    from tests.shrink import SHRINK, make_inputs
    shrunk = compile(path, overrides=SHRINK[path]).raise_for_errors()
    group = 32 if target == "mlx" else None
    if target == "mlx" and "dinov3" in path:              # shrunk to 16-wide vision heads: no MLX group fits
        with pytest.raises(QuantError, match="width 16 is not a multiple of the group size 32"):
            quant_plan(shrunk, target, q, group)
        return
    plan = quant_plan(shrunk, target, q, group)
    c = compile(path, overrides=SHRINK[path], format=plan.fmt.name).raise_for_errors()
    inputs = make_inputs(c, seed=0)
    if target == "mlx":
        model = mq.quantise(runtime_mlx.build(c, seed=0), plan)
        out = model(**{k: mx.array(v) for k, v in inputs.items()})
        mx.eval(out)
        got = mq.stored_bytes(model)
    else:
        model = tq.quantise(runtime_torch.build(c, seed=0), plan).eval()
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        got = tq.stored_bytes(model)
    assert got == c.report["memory"]["weights"][plan.fmt.name] == plan.expected_bytes
    assert set(out) == set(c.report["outputs"])
