"""Vision parity against transformers: SigLIP, SigLIP2, DINOv2, DINOv3 ViT, and the exact backbone counts.

Each parity test builds a tiny transformers model from a fixed seed (weights perturbed so that biases, norms and
LayerScale are not at their trivial init), saves it with `save_pretrained` (safetensors, the checkpoint names),
imports its config with `spec_from_hf_config`, builds the omnic model, loads the file strictly through
`hf_key_map`, and compares the last hidden state (and the pooled output where there is one) in float32.
The counts test checks transformers on the meta device == the compiler's report == omnic's torch model on meta
for the backbones of docs/reference (backbones.md).
"""
from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

import compiler  # noqa: E402
from compiler.importers import hf_key_map, spec_from_hf_config  # noqa: E402
from runtime_torch import build, load_state_dict_mapped  # noqa: E402
from runtime_common.weights import map_names  # noqa: E402
from tests.hf_models import patchify, perturbed  # noqa: E402

ATOL = 1e-4


# --- helpers ---------------------------------------------------------------------------------------------------------
def rename(names, key_map) -> dict:
    """{omnic name: checkpoint name} of checkpoint `names` under a key map (regex renames)."""
    renamed, clashes = map_names(names, key_map)
    assert not clashes, clashes
    return renamed


def omnic_from(m, tmp_path, image_hw: tuple[int, int] | None = None):
    """The omnic model of transformers model `m` (config imported, weights loaded strictly through the key map)."""
    cfg = m.config.to_dict()
    spec = spec_from_hf_config(cfg)
    if image_hw:
        spec["inputs"][0]["shape"] = ["B", spec["inputs"][0]["shape"][1], *image_hw]
    c = compiler.compile(spec)
    assert c.ok, c.errors
    om = build(c, init=False, device="meta")
    m.save_pretrained(tmp_path)
    tensors = load_file(os.path.join(tmp_path, "model.safetensors"))
    load_state_dict_mapped(om, tensors, hf_key_map(cfg["model_type"]), strict=True)
    return om.eval(), c


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# --- parity ----------------------------------------------------------------------------------------------------------
SIGLIP_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                   patch_size=8, attn_implementation="eager")


@pytest.mark.parametrize("head,hw", [(True, (32, 32)), (False, (32, 32)), (True, (24, 40))])
def test_siglip(tmp_path, head, hw):
    """(24, 40): the 4x4 table resized to 3x5, as transformers' interpolate_pos_encoding=True (bicubic)."""
    m = perturbed(transformers.SiglipVisionModel, transformers.SiglipVisionConfig(**SIGLIP_TINY, vision_use_head=head))
    om, _ = omnic_from(m, tmp_path, hw)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref, out = m(pixel_values=x, interpolate_pos_encoding=hw != (32, 32)), om(pixel_values=x)
    assert max_diff(out["vision.vision_model.post_layernorm"], ref.last_hidden_state) < ATOL
    if head:
        assert max_diff(out["vision.vision_model.head"], ref.pooler_output) < ATOL


@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_siglip2(tmp_path, hw):
    """Fixed resolution: every patch real (mask of ones), spatial_shapes = the grid; (24, 40) resizes the 4x4
    table to 3x5 (bilinear, antialias)."""
    cfg = transformers.Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, patch_size=8, num_patches=16,
                                           attn_implementation="eager")
    m = perturbed(transformers.Siglip2VisionModel, cfg)
    om, c = omnic_from(m, tmp_path, hw)
    x = torch.randn(2, 3, *hw)
    h, w = hw[0] // 8, hw[1] // 8
    with torch.no_grad():
        ref = m(pixel_values=patchify(x, 8), pixel_attention_mask=torch.ones(2, h * w, dtype=torch.long),
                spatial_shapes=torch.tensor([[h, w]] * 2))
        out = om(pixel_values=x)
    assert max_diff(out["vision.vision_model.post_layernorm"], ref.last_hidden_state) < ATOL
    assert max_diff(out["vision.vision_model.head"], ref.pooler_output) < ATOL


@pytest.mark.parametrize("hw", [(32, 32), (40, 24)])
def test_dinov2(tmp_path, hw):
    """(40, 24) is a 5x3 grid: the 4x4 table (plus its CLS row) is interpolated bicubically."""
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
                                    image_size=32, patch_size=8, attn_implementation="eager")
    m = perturbed(transformers.Dinov2Model, cfg)
    om, c = omnic_from(m, tmp_path, hw)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref, out = m(pixel_values=x), om(pixel_values=x)
    assert max_diff(out["vision.layernorm"], ref.last_hidden_state) < ATOL


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("hw", [(32, 32), (32, 48)])
def test_dinov3(tmp_path, gated, hw):
    """CLS + 2 registers, LayerScale, 2-D RoPE on the patch tokens of the actual grid; gated: SwiGLU."""
    cfg = transformers.DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8, num_register_tokens=2,
                                       use_gated_mlp=gated, hidden_act="silu" if gated else "gelu",
                                       rope_theta=100.0, layerscale_value=1.0, attn_implementation="eager")
    m = perturbed(transformers.DINOv3ViTModel, cfg)
    om, c = omnic_from(m, tmp_path, hw)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref, out = m(pixel_values=x), om(pixel_values=x)
    assert max_diff(out["vision.norm"], ref.last_hidden_state) < ATOL


def test_dinov3_without_registers_keeps_the_empty_table(tmp_path):
    """transformers declares (and saves) register_tokens (1, 0, D) even without registers."""
    cfg = transformers.DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8, num_register_tokens=0,
                                       attn_implementation="eager")
    m = perturbed(transformers.DINOv3ViTModel, cfg)
    om, _ = omnic_from(m, tmp_path)
    assert tuple(om.state_dict()["vision.embeddings.register_tokens"].shape) == (1, 0, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(om(pixel_values=x)["vision.norm"], m(pixel_values=x).last_hidden_state) < ATOL


def test_full_siglip_config_imports_its_vision_tower():
    vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
               patch_size=8)
    full = transformers.SiglipConfig(vision_config=vis).to_dict()
    alone = transformers.SiglipVisionConfig(**vis).to_dict()
    assert spec_from_hf_config(full)["layers"] == spec_from_hf_config(alone)["layers"]


# --- exact counts (backbones.md) -------------------------------------------------------------------------------------
def _counts():
    T = transformers
    big = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    so400m = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
    dv3 = dict(patch_size=16, image_size=224, num_register_tokens=4, layerscale_value=1.0, rope_theta=100.0)
    return {
        "SigLIP-B/16-224": (T.SiglipVisionModel, T.SiglipVisionConfig, dict(big, image_size=224, patch_size=16),
                            92_884_224, 85_797_120),
        "SigLIP2-B/16-512": (T.SiglipVisionModel, T.SiglipVisionConfig, dict(big, image_size=512, patch_size=16),
                             93_520_128, 86_433_024),
        "SigLIP2-B/16-512 naflex": (T.Siglip2VisionModel, T.Siglip2VisionConfig,
                                    dict(big, num_patches=1024, patch_size=16), 93_520_128, 86_433_024),
        "SigLIP2-SO400M/16-384": (T.SiglipVisionModel, T.SiglipVisionConfig,
                                  dict(so400m, image_size=384, patch_size=16), 428_256_704, 413_018_352),
        "SigLIP2-SO400M/16-384 naflex": (T.Siglip2VisionModel, T.Siglip2VisionConfig,
                                         dict(so400m, num_patches=576, patch_size=16), 428_256_704, 413_018_352),
        "DINOv2-small": (T.Dinov2Model, T.Dinov2Config,
                         dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                              image_size=518, patch_size=14, layerscale_value=1.0), 22_056_576, None),
        "DINOv2-giant (SwiGLU)": (T.Dinov2Model, T.Dinov2Config,
                                  dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4,
                                       image_size=518, patch_size=14, use_swiglu_ffn=True), 1_136_480_768, None),
        "DINOv3 ViT-S/16+": (T.DINOv3ViTModel, T.DINOv3ViTConfig,
                             dict(dv3, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
                                  num_attention_heads=6, use_gated_mlp=True, hidden_act="silu"), 28_692_864, None),
        "DINOv3 ViT-B/16": (T.DINOv3ViTModel, T.DINOv3ViTConfig,
                            dict(dv3, **big, use_gated_mlp=False, hidden_act="gelu"), 85_660_416, None),
        "DINOv3 ViT-L/16": (T.DINOv3ViTModel, T.DINOv3ViTConfig,
                            dict(dv3, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, use_gated_mlp=False, hidden_act="gelu"), 303_129_600, None),
    }


COUNT_CASES = [(name, head) for name, case in _counts().items() for head in (True, False)
               if head or case[4] is not None]


@pytest.mark.parametrize("name,head", COUNT_CASES, ids=[f"{n}{'' if h else ' (no head)'}" for n, h in COUNT_CASES])
def test_backbone_counts(name, head):
    cls, cfg_cls, kw, with_head, without = _counts()[name]
    has_head_option = without is not None
    kw = dict(kw, vision_use_head=head) if has_head_option else kw
    want = with_head if head else without
    with torch.device("meta"):
        m = cls(cfg_cls(**kw))
    assert sum(p.numel() for p in m.parameters()) == want
    c = compiler.compile(spec_from_hf_config(cfg_cls(**kw).to_dict()))
    assert c.ok, c.errors
    assert c.report["params"]["total"] == want
    om = build(c, device="meta")
    assert sum(p.numel() for p in om.parameters()) == want
    # and the same names and shapes as the checkpoint (through the key map; transformers 5 renames some on load)
    if cls is not transformers.Dinov2Model:
        ours = {k: tuple(v.shape) for k, v in om.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        if cls is transformers.DINOv3ViTModel:
            theirs = {k.replace("model.layer.", "layer.", 1): s for k, s in theirs.items()}
        assert {k: theirs[v] for k, v in rename(theirs, hf_key_map(m.config.model_type)).items()} == ours


# --- nanoVLM, resampling, and the compiler's rules -------------------------------------------------------------------
def _build(layers: list, inputs: list, outputs: list | None = None):
    c = compiler.compile({"name": "t", "inputs": inputs, "layers": layers, **({"outputs": outputs} if outputs else {})})
    assert c.ok, [d.render() for d in c.errors]
    return build(c).eval(), c


def _img(c, h, w):
    return [{"name": "image", "kind": "image", "shape": ["B", c, h, w]}]


def nanovlm_pixel_shuffle(x, s):
    """nanoVLM's ModalityProjector.pixel_shuffle, verbatim in its order (seed-systems.md)."""
    bsz, seq, embed_dim = x.size()
    seq_root = int(seq ** 0.5)
    x = x.view(bsz, seq_root, seq_root, embed_dim)
    h_out = w_out = seq_root // s
    x = x.reshape(bsz, h_out, s, w_out, s, embed_dim)
    x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(bsz, h_out * w_out, embed_dim * s * s)


@pytest.mark.parametrize("s", [2, 4])
def test_pixel_shuffle_is_nanovlms(s):
    m, c = _build([{"id": "vit", "type": "VisionEncoder", "params": {"family": "nanovlm", "patch_size": 2,
                                                                       "hidden": 8, "layers": 1, "heads": 2}},
                   {"id": "mp", "type": "PixelShuffle", "params": {"factor": s}}], _img(3, 16, 16), ["vit", "mp"])
    assert str(c.graph["mp"].out) == f"(B, {(8 // s) ** 2}, {8 * s * s})" and c.graph["mp"].out.grid == (8 // s,) * 2
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = m(image=x)
    assert torch.equal(out["mp"], nanovlm_pixel_shuffle(out["vit.layer_norm"], s))


def test_nanovlm_names():
    """The published nanoVLM vision encoder's state-dict names (seed-systems.md)."""
    m, _ = _build([{"id": "vision_encoder", "type": "VisionEncoder",
                    "params": {"family": "nanovlm", "patch_size": 4, "hidden": 8, "layers": 2, "heads": 2}}],
                  _img(3, 8, 8))
    names = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert names["vision_encoder.patch_embedding.conv.weight"] == (8, 3, 4, 4)
    assert names["vision_encoder.patch_embedding.position_embedding"] == (1, 4, 8)
    assert names["vision_encoder.blocks.1.attn.qkv_proj.weight"] == (24, 8)
    assert {"vision_encoder.blocks.0.ln1.bias", "vision_encoder.blocks.0.attn.out_proj.bias",
            "vision_encoder.blocks.0.mlp.fc2.weight", "vision_encoder.layer_norm.weight"} <= set(names)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_grid_resample(mode):
    """24x24 -> 14x14 as Oculus resamples SigLIP2; CLS/register tokens pass through."""
    m, c = _build([{"id": "embed", "type": "PatchEmbed", "params": {"embed_dim": 4, "patch_size": 1,
                                                                      "cls_token": True, "registers": 2}},
                   {"id": "rs", "type": "GridResample", "params": {"size": [14, 14], "mode": mode}}],
                  _img(3, 24, 24), ["embed", "rs"])
    t = c.graph["rs"].out
    assert (str(t), t.grid, t.prefix) == ("(B, 199, 4)", (14, 14), 3)
    with torch.no_grad():
        out = m(image=torch.randn(2, 3, 24, 24))
    x = out["embed"]
    grid = x[:, 3:].transpose(1, 2).reshape(2, 4, 24, 24)
    ref = (torch.nn.functional.adaptive_avg_pool2d(grid, 14) if mode == "area" else
           torch.nn.functional.interpolate(grid, size=(14, 14), mode="bilinear", align_corners=False))
    assert torch.equal(out["rs"][:, :3], x[:, :3])
    assert torch.allclose(out["rs"][:, 3:], ref.flatten(2).transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize("layer,inputs,needle", [
    ({"type": "VisionEncoder", "params": {"family": "dinov2", "patch_size": 2, "hidden": 8, "layers": 1,
                                          "heads": 2, "pooling_head": True}}, _img(3, 4, 4), "no attention-pooling"),
    ({"type": "VisionEncoder", "params": {"family": "siglip", "patch_size": 2, "hidden": 8, "layers": 1,
                                          "heads": 2, "positions": "rope2d"}}, _img(3, 4, 4), "2-D RoPE"),
    ({"type": "VisionEncoder", "params": {"family": "dinov3", "patch_size": 2, "hidden": 12, "layers": 1,
                                          "heads": 2}}, _img(3, 4, 4), "divisible by 4"),
    ({"type": "PatchEmbed", "params": {"embed_dim": 8, "patch_size": 3, "kind": "linear"}}, _img(3, 8, 8),
     "not a multiple"),
    ({"type": "PatchEmbed", "params": {"embed_dim": 8, "patch_size": 2, "cls_token": True, "names": "siglip"}},
     _img(3, 8, 8), "no cls"),
    ({"type": "PixelShuffle", "params": {"factor": 2}}, [{"name": "x", "kind": "tokens", "shape": ["B", 16, 8]}],
     "no patch grid"),
])
def test_vision_diagnostics(layer, inputs, needle):
    c = compiler.compile({"name": "t", "inputs": inputs, "layers": [layer]})
    assert not c.ok and any(needle in d.message for d in c.errors), [d.message for d in c.errors]


def test_pixel_shuffle_refuses_prefix_tokens():
    c = compiler.compile({"name": "t", "inputs": _img(3, 8, 8), "layers": [
        {"type": "PatchEmbed", "params": {"embed_dim": 8, "patch_size": 2, "cls_token": True}},
        {"type": "PixelShuffle", "params": {"factor": 2}}]})
    assert not c.ok and "Select" in c.errors[0].hint
    c = compiler.compile({"name": "t", "inputs": _img(3, 8, 8), "layers": [
        {"type": "PatchEmbed", "params": {"embed_dim": 8, "patch_size": 2, "cls_token": True, "registers": 4}},
        {"type": "Select", "params": {"tokens": "patches"}},
        {"type": "PixelShuffle", "params": {"factor": 2}}]})
    assert c.ok and str(c.graph.nodes()[-1].out) == "(B, 4, 32)"
