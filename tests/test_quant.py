"""Quantised builds for torch (torchao) and GGUF, and the plan's errors: the bytes the built weights hold (in the saved
file and in the live model) equal the report's `memory.weights[format]` exactly; a saved build loads back to the same
model; the GGUF file reads back with gguf's reader; bad input is a QuantError naming the layer before any work.

The expected figure is the compiler's report; the measured ones are counted from what torchao's tensors hold
(`__tensor_flatten__`, independent of the format table) and from the safetensors header / GGUFReader's byte counts.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import runtime_torch
from compiler import compile
from compiler.quantise import QuantError, quant_plan
from tests.quant_cases import spec

torchao = pytest.importorskip("torchao")
gguf = pytest.importorskip("gguf")

from compiler.emit import gguf as emit_gguf  # noqa: E402
from runtime_torch import generate as torch_generate  # noqa: E402
from runtime_torch import quantize as tq  # noqa: E402

IDS = torch.tensor([[5, 17, 3, 42, 8, 61, 29]])


def built(s: dict, target: str, q: str, group=None):
    plan = quant_plan(compile(s).raise_for_errors(), target, q, group)
    return plan, compile(s, format=plan.fmt.name).raise_for_errors()


@pytest.mark.parametrize("q,group,fmt", [("int8", None, "torchao-int8"), ("int4", None, "torchao-int4"),
                                         ("int4", 32, "torchao-int4-g32")])
@pytest.mark.parametrize("tie", [False, True])
def test_torchao_bytes_equal_the_report(q, group, fmt, tie, tmp_path):
    plan, c = built(spec(tie=tie), "torch", q, group)
    assert plan.fmt.name == fmt
    report = c.report["memory"]["weights"][fmt]
    ref = runtime_torch.build(c, seed=0).eval()
    model = tq.quantise(runtime_torch.build(c, seed=0), plan).eval()
    quantised = [n for n, p in model.named_parameters() if type(p) is not torch.nn.Parameter]
    assert sorted(quantised) == sorted(plan.quantised) and plan.quantised
    assert tq.stored_bytes(model) == report == plan.expected_bytes
    path = tmp_path / "q.safetensors"
    tq.save_quantised(model, path, plan)
    assert tq.file_bytes(path) == report
    with torch.no_grad():
        got, want = model(input_ids=IDS)["lm.lm_head"].float(), ref(input_ids=IDS)["lm.lm_head"]
        err = (got - want).abs().max().item()
        assert 0 < err < (0.05 if q == "int8" else 0.25) * want.abs().max().item()     # quantised, and close
        back = tq.load_quantised(c, path).eval()
        assert torch.equal(back(input_ids=IDS)["lm.lm_head"], model(input_ids=IDS)["lm.lm_head"])
    # decoding runs on the quantised weights (the decode packing leaves torchao's tensors alone)
    out = torch_generate.generate(model, IDS, 4)
    assert out.shape == (1, IDS.shape[1] + 4)


def test_torch_build_from_a_checkpoint_folder_and_cli(tmp_path, capsys):
    """`--weights-from` a transformers-style folder, quantised: the verdict names the built format."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    from compiler.cli import main
    s = spec()
    c = compile(s).raise_for_errors()
    src = tmp_path / "ckpt"
    src.mkdir()
    LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False
                ).save_pretrained(src)
    seeded = runtime_torch.build(c, seed=7)
    save_file({k.removeprefix("lm."): v.contiguous() for k, v in seeded.state_dict().items()},
              src / "model.safetensors")
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**s, "budget": {"vram": "1GiB", "format": "bf16"}}))
    with pytest.raises(SystemExit) as e:
        main(["build", str(path), "--target", "torch", "--quantize", "int8", "--weights-from", str(src), "-o",
              str(tmp_path / "out")])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "budget memory.inference[torchao-int8]" in out and ": pass" in out
    meta = json.loads((tmp_path / "out" / "quantization.json").read_text())
    assert meta["format"] == "torchao-int8" and meta["weight_bytes"] == tq.file_bytes(tmp_path / "out" /
                                                                                          "model.safetensors")
    c8 = compile(s, format="torchao-int8").raise_for_errors()
    back = tq.load_quantised(c8, tmp_path / "out" / "model.safetensors")
    want = tq.quantise(runtime_torch.build(c8, seed=7), quant_plan(c8, "torch", "int8"))
    for (n, a), (_, b) in zip(sorted(tq.stored_tensors(back).items()), sorted(tq.stored_tensors(want).items())):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("tie", [False, True])
def test_gguf_q8_0_bytes_metadata_and_values(tie, tmp_path):
    plan, c = built(spec(tie=tie), "gguf", "q8_0")
    paths = emit_gguf.write(c, tmp_path, seed=0, quant=plan)
    rows = emit_gguf.listing(paths[0])
    assert sum(r[3] for r in rows) == c.report["memory"]["weights"]["q8_0"] == plan.expected_bytes
    types = {name: t for name, t, _, _ in rows}
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert ("output.weight" in types) != tie                      # a tied head reads token_embd (llama.cpp)
    r = gguf.GGUFReader(paths[0])
    field = {k: f.contents() for k, f in r.fields.items()}
    assert field["general.architecture"] == "llama" and field["llama.block_count"] == 2
    assert field["llama.attention.head_count_kv"] == 2 and field["llama.embedding_length"] == 128
    assert field["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0 and field["llama.vocab_size"] == 96
    # the dequantised weights, q/k rows back in transformers' order, are the seeded ones within Q8_0's step
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    deq = emit_gguf.read_float(paths[0], 4, 2)
    ref = runtime_torch.build(c, seed=0)
    for k, v in ref.state_dict().items():
        if k in ref.ties:
            continue
        g = deq[names.get_name(k[3:], try_suffixes=(".weight",))]
        assert g.shape == tuple(v.shape)
        assert np.abs(g - v.numpy()).max() <= np.abs(v.numpy()).max() / 127 + 1e-6, k


def test_gguf_permutation_is_llama_cpp_s():
    """convert_hf_to_gguf's LlamaModel.permute: head h's rows (r0..r_{d/2-1} | r_{d/2}..) become interleaved pairs."""
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)        # 2 heads of 4 rows
    p = emit_gguf.permute(w, 2)
    assert p[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]
    assert np.array_equal(emit_gguf.unpermute(p, 2), w)


# --- errors, before any work ------------------------------------------------------------------------------------
@pytest.mark.parametrize("target,q,group,words", [
    ("torch", "int4", 256, ["layers 'lm.model.layers.0'", "width 128", "group size 256", "32, 64, 128"]),
    ("mlx", "4", 48, ["group size 48", "32, 64, 128"]),
    ("torch", "int8", 64, ["--group-size does not apply", "torchao-int8"]),
    ("onnx", "4", None, ["ONNX target"]),
    ("gguf", "q4_k", None, ["no Q4_K quantiser"]),
    ("torch", "q8_0", None, ["built by target gguf"]),
    ("mlx", "3", None, ["builds: 4, 8"]),
])
def test_bad_quantisation_names_the_problem(target, q, group, words):
    with pytest.raises(QuantError) as e:
        quant_plan(compile(spec()).raise_for_errors(), target, q, group)
    for w in words:
        assert w in str(e.value)


def test_group_size_not_dividing_a_width_names_layer_and_tensor():
    with pytest.raises(QuantError) as e:
        quant_plan(compile(spec(ff_dim=96)).raise_for_errors(), "mlx", "4", 64)
    msg = str(e.value)
    assert "'lm.model.layers.0', 'lm.model.layers.1'" in msg and "tensor mlp.down_proj.weight" in msg
    assert "width 96" in msg and "group sizes that divide it: 32" in msg and len(msg.splitlines()) == 2


def test_layers_that_cannot_be_quantised():
    moe = spec("qwen2_moe", ff_dim=None, num_experts=4, top_k=2, expert_dim=64, shared_expert_dim=64)
    with pytest.raises(QuantError, match="stacked experts"):
        quant_plan(compile(moe).raise_for_errors(), "torch", "int8")
    with pytest.raises(QuantError, match="stacked experts: omnic-MLX holds them as bare arrays"):
        quant_plan(compile(moe).raise_for_errors(), "mlx", "4")
    with pytest.raises(QuantError, match="llama.cpp's 'llama'"):
        quant_plan(compile(spec("gemma3", head_dim=32)).raise_for_errors(), "gguf", "q8_0")
    with pytest.raises(QuantError, match="GGUF export covers one llama-family DecoderLM"):
        quant_plan(compile({"name": "x", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", "T", 64]}],
                            "layers": [{"type": "Linear", "params": {"in_features": 64, "out_features": 64}}]}
                           ).raise_for_errors(), "gguf", "q8_0")


def test_cli_bad_quantisation_exits_2_without_writing(tmp_path, capsys):
    from compiler.cli import main
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec(ff_dim=96)))
    with pytest.raises(SystemExit) as e:
        main(["build", str(path), "--target", "mlx", "--quantize", "4", "-o", str(tmp_path / "out")])
    assert e.value.code == 2
    assert "width 96" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_gguf_from_a_checkpoint(tmp_path):
    plan, c = built(spec(), "gguf", "q8_0")
    ckpt = tmp_path / "w.safetensors"
    src = runtime_torch.build(c, seed=7)
    runtime_torch.save_weights(src, ckpt)
    path = emit_gguf.write(c, tmp_path, quant=plan, weights_from=str(ckpt))[0]
    deq = emit_gguf.read_float(path, 4, 2)
    w = src.state_dict()["lm.model.layers.1.self_attn.k_proj.weight"].numpy()
    assert np.abs(deq["blk.1.attn_k.weight"] - w).max() <= np.abs(w).max() / 127 + 1e-6


def test_cli_group_size_without_quantize_is_a_usage_error(tmp_path, capsys):
    from compiler.cli import main
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec()))
    with pytest.raises(SystemExit) as e:
        main(["build", str(path), "--target", "mlx", "--group-size", "32", "-o", str(tmp_path / "out")])
    assert e.value.code == 2 and "--group-size goes with --quantize" in capsys.readouterr().err
