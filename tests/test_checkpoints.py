"""Checkpoints as transformers writes them load strictly through the family key maps, in torch and in MLX.

For each family a tiny transformers model (fixed seed, weights perturbed) is written in each naming generation its
files come in, and loaded with `load_checkpoint(model, folder, hf_key_map(model_type))` (strict):
  save_pretrained   what transformers 5.x writes (it reverses its load-time renames: the 4.x hub names)
  state_dict        transformers 5.x in-memory names (DINOv2 `attention.q_proj`, DINOv3 `model.layer.`, stacked
                    experts), as a script that saves `model.state_dict()` writes them
  base              the base model's own save_pretrained (no `model.` prefix, no head; tied families only)
  per_expert        the per-expert tensors of Mixtral / Qwen2-MoE hub checkpoints (w1/w2/w3, experts.N.*_proj)
  classifier        Dinov2ForImageClassification (`dinov2.` prefix, classifier dropped)
  sharded           save_pretrained with a small max_shard_size (model.safetensors.index.json)
The outputs are compared with transformers' in fp32 (1e-4). Also: bf16/fp16 files into fp32/bf16 models, the strict
report listing every differing name, MLX loading per-expert files without importing torch (a subprocess), and the
peak memory of a load (a subprocess) against the model's size.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch
import transformers as tf
from safetensors.torch import save_file

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from runtime_common.weights import WeightsMismatch
from tests.hf_models import TINY, hf_model as hf_lm, hub_layout, perturbed

ATOL = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_VIT = dict(num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, attn_implementation="eager")
VISION = {
    "siglip": lambda: perturbed(tf.SiglipVisionModel, tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64,
                                                                          **_VIT)),
    "dinov2": lambda: perturbed(tf.Dinov2Model, tf.Dinov2Config(hidden_size=32, **_VIT)),
    "dinov2_swiglu": lambda: perturbed(tf.Dinov2Model, tf.Dinov2Config(hidden_size=32, use_swiglu_ffn=True, **_VIT)),
    "dinov3": lambda: perturbed(tf.DINOv3ViTModel, tf.DINOv3ViTConfig(
        hidden_size=32, intermediate_size=64, num_register_tokens=2, **dict(_VIT, num_attention_heads=2))),
}
# output of each vision family's last norm in omnic
VISION_OUT = {"siglip": "vision.vision_model.post_layernorm", "dinov2": "vision.layernorm",
              "dinov2_swiglu": "vision.layernorm", "dinov3": "vision.norm"}


def _state_dict_file(m, folder):
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in m.state_dict().items()},
              os.path.join(folder, "model.safetensors"))
    return folder


def write(m, family: str, generation: str, folder: str) -> str:
    """Write `m`'s weights as files of `generation` come (see the module docstring) into `folder`."""
    if generation == "save_pretrained":
        m.save_pretrained(folder)
    elif generation == "sharded":
        m.save_pretrained(folder, max_shard_size="40KB")
        assert os.path.isfile(os.path.join(folder, "model.safetensors.index.json"))
    elif generation == "state_dict":
        _state_dict_file(m, folder)
    elif generation == "base":
        m.model.save_pretrained(folder)
    elif generation == "per_expert":
        os.makedirs(folder)
        save_file({k: v.contiguous() for k, v in hub_layout(m.state_dict(), family).items()},
                  os.path.join(folder, "model.safetensors"))
    elif generation == "classifier":
        clf = tf.Dinov2ForImageClassification(m.config)
        clf.dinov2.load_state_dict(m.state_dict())
        clf.save_pretrained(folder)
    return folder


LM_CASES = [(f, g) for f in TINY for g in ("save_pretrained", "state_dict")] + \
    [("llama", "base"), ("gemma3", "base"), ("lfm2", "base"), ("llama", "sharded"),
     ("qwen2_moe", "per_expert"), ("mixtral", "per_expert")]
VISION_CASES = [(f, g) for f in VISION for g in ("save_pretrained", "state_dict")] + \
    [("dinov2", "classifier"), ("dinov2_swiglu", "classifier"), ("dinov3", "sharded")]

_MODELS: dict = {}


def model_of(family):
    if family not in _MODELS:
        _MODELS[family] = hf_lm(family) if family in TINY else VISION[family]()
    return _MODELS[family]


def _compiled(m):
    c = compiler.compile(spec_from_hf_config(m.config.to_dict()))
    assert c.ok, [d.render() for d in c.errors]
    return c


@pytest.mark.parametrize("family, generation", LM_CASES + VISION_CASES)
def test_files_load_strictly_and_match_transformers(family, generation, tmp_path):
    m = model_of(family)
    folder = write(m, family, generation, str(tmp_path / generation))
    c = _compiled(m)
    keymap = hf_key_map(m.config.model_type)
    tm = rt.build(c, device="meta", init=False)
    rt.load_checkpoint(tm, folder, keymap)                       # strict
    mm = runtime_mlx.build(c, init=False)
    runtime_mlx.load_checkpoint(mm, folder, keymap)
    if family in TINY:
        ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = m(input_ids=ids).logits
            got = tm.eval()(input_ids=ids)["lm.lm_head"]
        got_mlx = np.asarray(mm(input_ids=mx.array(ids.numpy()))["lm.lm_head"])
    else:
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            want = m(pixel_values=x).last_hidden_state
            got = tm.eval()(pixel_values=x)[VISION_OUT[family]]
        got_mlx = np.asarray(mm(pixel_values=mx.array(x.numpy()))[VISION_OUT[family]])
    assert (got - want).abs().max().item() < ATOL
    assert np.abs(got_mlx - want.numpy()).max() < ATOL


@pytest.mark.parametrize("file_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("model_dtype", ["bfloat16", "float16", "float32"])
def test_any_file_dtype_into_any_model_dtype(file_dtype, model_dtype, tmp_path):
    m = model_of("llama")
    src = {k: v.detach().to(file_dtype).clone() for k, v in m.state_dict().items()}
    save_file(src, str(tmp_path / "model.safetensors"))
    c = _compiled(m)
    tm = rt.build(c, device="meta", dtype=model_dtype, init=False)
    rt.load_checkpoint(tm, tmp_path, hf_key_map("llama"))
    mm = runtime_mlx.build(c, dtype=model_dtype, init=False)
    runtime_mlx.load_checkpoint(mm, tmp_path, hf_key_map("llama"))
    name, ckpt_name = "lm.model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"
    want = src[ckpt_name].to(getattr(torch, model_dtype))
    got = tm.state_dict()[name]
    assert got.dtype == want.dtype and torch.equal(got, want)
    got_mlx = mm.param(name)
    assert str(got_mlx.dtype).endswith(model_dtype)
    assert np.array_equal(np.asarray(got_mlx.astype(mx.float32)), want.float().numpy())


def test_report_lists_every_name_that_differs(tmp_path):
    m = model_of("llama")
    state = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
    state["model.layers.0.mlp.up_proj.weight"] = state["model.layers.0.mlp.up_proj.weight"][:-1].contiguous()
    del state["model.layers.1.self_attn.k_proj.weight"]
    state["model.layers.1.self_attn.extra.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "model.safetensors"))
    tm = rt.build(_compiled(m), device="meta", init=False)
    mm = runtime_mlx.build(_compiled(m), init=False)
    for model, load in ((tm, rt.load_checkpoint), (mm, runtime_mlx.load_checkpoint)):
        with pytest.raises(WeightsMismatch) as e:
            load(model, tmp_path, hf_key_map("llama"))
        err = e.value
        assert err.missing == ["lm.model.layers.1.self_attn.k_proj.weight (32, 64)"]
        assert err.unexpected == ["lm.model.layers.1.self_attn.extra.weight "
                                  "(checkpoint model.layers.1.self_attn.extra.weight)"]
        assert len(err.shapes) == 1 and "model.layers.0.mlp.up_proj.weight" in err.shapes[0] \
            and "(127, 64)" in err.shapes[0]


def test_incomplete_expert_set_is_named(tmp_path):
    m = model_of("mixtral")
    hub = hub_layout(m.state_dict(), "mixtral")
    del hub["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    save_file({k: v.contiguous() for k, v in hub.items()}, str(tmp_path / "model.safetensors"))
    tm = rt.build(_compiled(m), device="meta", init=False)
    with pytest.raises(WeightsMismatch, match=r"lacks experts/parts 2\.w3"):
        rt.load_checkpoint(tm, tmp_path, hf_key_map("mixtral"))


def test_no_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    tm = rt.build(_compiled(model_of("llama")), device="meta", init=False)
    with pytest.raises(ValueError, match="pytorch_model.bin: pickle files are not read"):
        rt.load_checkpoint(tm, tmp_path, hf_key_map("llama"))


def _run(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_mlx_loads_per_expert_files_without_torch(family, tmp_path):
    m = model_of(family)
    folder = write(m, family, "per_expert", str(tmp_path / "ckpt"))
    with open(tmp_path / "config.json", "w") as f:
        json.dump(m.config.to_dict(), f)
    ids = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(3))
    res = _run(f"""
        import json, sys
        import runtime_mlx, mlx.core as mx, numpy as np, compiler
        from compiler.importers import hf_key_map, spec_from_hf_config
        cfg = json.load(open({str(tmp_path / "config.json")!r}))
        model = runtime_mlx.build(compiler.compile(spec_from_hf_config(cfg)), init=False)
        runtime_mlx.load_checkpoint(model, {folder!r}, hf_key_map(cfg["model_type"]))
        out = np.asarray(model(input_ids=mx.array({ids.tolist()!r}))["lm.lm_head"])
        np.save({str(tmp_path / "out.npy")!r}, out)
        print(json.dumps({{"torch": "torch" in sys.modules}}))
    """)
    assert res["torch"] is False
    with torch.no_grad():
        want = m(input_ids=ids).logits.numpy()
    assert np.abs(np.load(tmp_path / "out.npy") - want).max() < ATOL


# a ~100 MB fp32 Llama: large enough that a second copy of the weights would show in the peak
_BIG = dict(model_type="llama", vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
            num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)


@pytest.mark.parametrize("runtime", ["torch", "mlx"])
def test_peak_memory_of_a_load_is_near_the_models_size(runtime, tmp_path):
    """The process's peak resident memory during the load (VmHWM, reset just before it through
    /proc/self/clear_refs) minus its resident memory before (imports done, model built without weights), over the
    model's bytes: a load that held the file's tensors and the model's at once would be about 2."""
    with torch.device("meta"):
        n = sum(p.numel() for p in tf.LlamaForCausalLM(tf.LlamaConfig(**_BIG)).parameters())
    g = torch.Generator().manual_seed(0)
    c = compiler.compile(spec_from_hf_config(_BIG))
    state = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in
             rt.build(c, device="meta", init=False).state_dict().items()}
    save_file({k.removeprefix("lm."): v for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    del state
    build = ("rt.build(c, device='meta', init=False)" if runtime == "torch" else "rt.build(c, init=False)")
    res = _run(f"""
        import json, gc
        def vm(key):
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
        import {'runtime_torch' if runtime == 'torch' else 'runtime_mlx'} as rt
        import compiler
        from compiler.importers import hf_key_map, spec_from_hf_config
        c = compiler.compile(spec_from_hf_config({_BIG!r}))
        model = {build}
        gc.collect()
        open("/proc/self/clear_refs", "w").write("5")      # reset the peak (VmHWM) to the current size
        before = vm("VmRSS")
        rt.load_checkpoint(model, {str(tmp_path)!r}, hf_key_map("llama"))
        print(json.dumps({{"before": before, "after": vm("VmHWM"), "held": vm("VmRSS")}}))
    """)
    ratio = (res["after"] - res["before"]) / (4 * n)
    print(f"{runtime}: load peak +{(res['after'] - res['before']) / 1e6:.0f} MB, held after "
          f"+{(res['held'] - res['before']) / 1e6:.0f} MB, for {4 * n / 1e6:.0f} MB of weights: {ratio:.2f}x")
    assert 0.9 < ratio < 1.35


# --- the CLI route: omnic import-hf DIR, omnic build SPEC --weights-from DIR ------------------------------------------
def _cli(*args):
    from click.testing import CliRunner

    from compiler.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("target", ["torch", "mlx"])
def test_import_and_build_from_a_checkpoint_folder(target, tmp_path):
    m = model_of("qwen2_moe")
    ckpt = tmp_path / "ckpt"
    m.save_pretrained(ckpt, max_shard_size="60KB")               # sharded, with config.json
    spec = tmp_path / "spec.json"
    r = _cli("import-hf", ckpt, "-o", spec)
    assert r.exit_code == 0, r.output
    doc = json.loads(spec.read_text())
    assert doc["name"] == "Qwen2MoeForCausalLM" and doc["context"] == m.config.max_position_embeddings
    before = spec.read_text()
    r = _cli("import-hf", ckpt, "-o", spec, "--name", "other")
    assert r.exit_code == 2 and "--force" in r.output and spec.read_text() == before
    assert _cli("import-hf", ckpt, "-o", spec, "--name", "mine", "--force").exit_code == 0
    assert json.loads(spec.read_text())["name"] == "mine"

    out = tmp_path / "out"
    r = _cli("build", spec, "--target", target, "-o", out, "--weights-from", ckpt)
    assert r.exit_code == 0, r.output
    c = compiler.compile(str(spec))
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = m(input_ids=ids).logits
    tm = rt.build(c, device="meta", init=False)
    rt.load_weights(tm, out / "model.safetensors")               # one file in omnic's layout, both runtimes
    mm = runtime_mlx.build(c, init=False)
    runtime_mlx.load_weights(mm, out / "model.safetensors")
    with torch.no_grad():
        assert (tm.eval()(input_ids=ids)["lm.lm_head"] - want).abs().max().item() < ATOL
    assert np.abs(np.asarray(mm(input_ids=mx.array(ids.numpy()))["lm.lm_head"]) - want.numpy()).max() < ATOL
    r = _cli("build", spec, "--target", target, "-o", out, "--weights-from", ckpt)
    assert r.exit_code == 2 and "--force" in r.output


def test_build_from_a_checkpoint_that_does_not_fit(tmp_path):
    m = model_of("llama")
    ckpt = tmp_path / "ckpt"
    m.save_pretrained(ckpt)
    spec = tmp_path / "spec.json"
    assert _cli("import-hf", ckpt, "-o", spec).exit_code == 0
    small = json.loads(spec.read_text())
    small["layers"][0]["params"]["layers"] = 1                   # the checkpoint has 2 layers
    small["layers"][0]["params"]["ff_dim"] = 96                  # and 128-wide MLPs
    spec.write_text(json.dumps(small))
    out = tmp_path / "out"
    r = _cli("build", spec, "--target", "torch", "-o", out, "--weights-from", ckpt)
    assert r.exit_code == 2 and not out.exists()
    assert "lm.model.layers.1.mlp.up_proj.weight (checkpoint model.layers.1.mlp.up_proj.weight)" in r.output
    assert "lm.model.layers.0.mlp.up_proj.weight (checkpoint model.layers.0.mlp.up_proj.weight): checkpoint " \
           "(128, 64), model (96, 64)" in r.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no temporary directory left


@pytest.mark.parametrize("config, needle", [
    ({"model_type": "bert"}, "unsupported model_type 'bert'; supported: "),
    ({"model_type": "gemma3_text", "use_bidirectional_attention": True},
     "use_bidirectional_attention=True is not supported"),
])
def test_import_refuses_naming_key_value_and_supported(config, needle, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = _cli("import-hf", tmp_path, "-o", tmp_path / "spec.json")
    assert r.exit_code == 2 and needle in r.output and not (tmp_path / "spec.json").exists()


# --- Qwen2-MoE with shared_expert_intermediate_size 0 ----------------------------------------------------------------
def test_qwen2_moe_zero_width_shared_expert(tmp_path):
    """transformers builds a (0, D) shared expert and a (1, D) shared-expert gate per layer anyway: counted and
    loaded as it does (a strict load of its file), and adding nothing to the output."""
    _, C, kw, _ = TINY["qwen2_moe"]
    torch.manual_seed(0)
    m = tf.Qwen2MoeForCausalLM(C(**dict(kw, shared_expert_intermediate_size=0), attn_implementation="eager",
                                 experts_implementation="eager")).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    assert tuple(m.state_dict()["model.layers.0.mlp.shared_expert_gate.weight"].shape) == (1, 64)
    c = _compiled(m)
    assert c.report["params"]["total"] == sum(p.numel() for p in m.parameters())
    for generation in ("save_pretrained", "per_expert"):
        folder = write(m, "qwen2_moe", generation, str(tmp_path / generation))
        tm = rt.build(c, device="meta", init=False)
        rt.load_checkpoint(tm, folder, hf_key_map("qwen2_moe"))
        mm = runtime_mlx.build(c, init=False)
        runtime_mlx.load_checkpoint(mm, folder, hf_key_map("qwen2_moe"))
        ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = m(input_ids=ids).logits
            assert (tm.eval()(input_ids=ids)["lm.lm_head"] - want).abs().max().item() < ATOL
        assert np.abs(np.asarray(mm(input_ids=mx.array(ids.numpy()))["lm.lm_head"]) - want.numpy()).max() < ATOL


def test_qwen2_moe_zero_shared_full_size_count():
    """Qwen1.5-MoE-A2.7B's shape with shared_expert_intermediate_size 0: transformers on meta == the report."""
    cfg = dict(model_type="qwen2_moe", vocab_size=151936, hidden_size=2048, num_hidden_layers=24,
               num_attention_heads=16, num_key_value_heads=16, moe_intermediate_size=1408, num_experts=60,
               num_experts_per_tok=4, shared_expert_intermediate_size=0)
    with torch.device("meta"):
        n = sum(p.numel() for p in tf.Qwen2MoeForCausalLM(tf.Qwen2MoeConfig(**cfg)).parameters())
    c = compiler.compile(spec_from_hf_config(cfg))
    assert c.report["params"]["total"] == n
    assert sum(p.numel() for p in rt.build(c, device="meta", init=False).parameters()) == n


# --- other image sizes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["siglip", "siglip2", "dinov2", "dinov3", "nanovlm"])
def test_another_image_size_is_refused_naming_the_specs(family):
    """A model runs at the size its spec was compiled for; another size is a ValueError naming the expected shape
    (compiled at that size, the towers resize their positions as transformers does: tests/test_parity_vision.py)."""
    spec = {"name": "t", "inputs": [{"name": "image", "kind": "image", "shape": ["B", 3, 32, 32]}],
            "layers": [{"id": "v", "type": "VisionEncoder", "params": {"family": family, "patch_size": 8,
                                                                       "hidden": 32, "layers": 1, "heads": 2}}]}
    c = compiler.compile(spec)
    for model, x in ((rt.build(c), torch.randn(1, 3, 40, 24)), (runtime_mlx.build(c), mx.zeros((1, 3, 40, 24)))):
        with pytest.raises(ValueError, match=r"input 'image' has shape \(1, 3, 40, 24\), but the spec expects "
                                             r"\(B, 3, 32, 32\)"):
            model(image=x)
    bigger = dict(spec, inputs=[{"name": "image", "kind": "image", "shape": ["B", 3, 40, 24]}])
    out = rt.build(compiler.compile(bigger))(image=torch.randn(1, 3, 40, 24))
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("prefix, head", [("model.language_model.", "lm_head.weight"),            # 5.x
                                          ("language_model.model.", "language_model.lm_head.weight")])   # 4.x hub
def test_gemma3_multimodal_checkpoint_names(prefix, head, tmp_path):
    """Gemma3ForConditionalGeneration files in either generation: the text model loads, the tower is dropped."""
    m = model_of("gemma3")
    state = {(prefix + k.removeprefix("model.") if k.startswith("model.") else head): v.detach().clone()
             for k, v in m.state_dict().items() if k != "lm_head.weight"}
    tower = prefix.replace("language_model", "vision_tower").removesuffix("model.")
    state[tower + "vision_model.post_layernorm.weight"] = torch.ones(8)
    state[prefix.split("language_model")[0] + "multi_modal_projector.mm_input_projection_weight"] = torch.ones(8, 64)
    save_file(state, str(tmp_path / "model.safetensors"))
    c = compiler.compile(spec_from_hf_config(tf.Gemma3Config(text_config=m.config.to_dict()).to_dict()))
    tm = rt.build(c, device="meta", init=False)
    rt.load_checkpoint(tm, tmp_path, hf_key_map("gemma3"))
    ids = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (tm.eval()(input_ids=ids)["lm.lm_head"] - m(input_ids=ids).logits).abs().max().item() < ATOL


@pytest.mark.parametrize("generation", ["save_pretrained", "state_dict"])
def test_siglip2_files_load_strictly(generation, tmp_path):
    """Siglip2VisionModel (NaFlex): transformers takes patchified pixels; every patch real, the grid as the image."""
    from tests.hf_models import patchify
    m = perturbed(tf.Siglip2VisionModel, tf.Siglip2VisionConfig(hidden_size=32, intermediate_size=64,
                                                              num_hidden_layers=2, num_attention_heads=4,
                                                              patch_size=8, num_patches=16,
                                                              attn_implementation="eager"))
    folder = write(m, "siglip2", generation, str(tmp_path / generation))
    c = _compiled(m)
    tm = rt.build(c, device="meta", init=False)
    rt.load_checkpoint(tm, folder, hf_key_map("siglip2_vision_model"))
    mm = runtime_mlx.build(c, init=False)
    runtime_mlx.load_checkpoint(mm, folder, hf_key_map("siglip2_vision_model"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = m(pixel_values=patchify(x, 8), pixel_attention_mask=torch.ones(2, 16, dtype=torch.long),
                 spatial_shapes=torch.tensor([[4, 4]] * 2)).last_hidden_state
        got = tm.eval()(pixel_values=x)["vision.vision_model.post_layernorm"]
    assert (got - want).abs().max().item() < ATOL
    got_mlx = np.asarray(mm(pixel_values=mx.array(x.numpy()))["vision.vision_model.post_layernorm"])
    assert np.abs(got_mlx - want.numpy()).max() < ATOL
