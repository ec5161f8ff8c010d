"""The shipped specs: each compiles cleanly with its claims checked, and runs a forward in torch once shrunk.

Shrinking: tests/shrink.py (SHRINK, the table of overrides, and make_inputs). Beyond shapes, the seed-system ops are
checked against references: fVLM's three modes against transformers' Dinov2Model + LlamaForCausalLM driven as the
published release code drives them (and its checkpoint names through the importer), nanoVLM specs against the
importer's output for nanoVLM's preset configs, the Oculus language model against components/lfm2_1.2b.json, and
properties of the resampler, flow head and VQ-VAE decoder.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

import compiler
import runtime_torch as rt
from compiler.cost import node_weights
from compiler.importers.fvlm import fvlm_key_map
from compiler.importers.nanovlm import nanovlm_key_map, spec_from_nanovlm_config
from compiler.ops.lm import DecoderLM
from tests.op_examples import image, layer, spec, tokens
from tests.shrink import ENV, ROOT, SHRINK, SPECS, make_inputs
from tests.tiny_specs import fvlm_tiny

ALL_SPECS = sorted(os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "specs"))
                   for f in fs if f.endswith(".json") and f != "schema.json" and "components" not in d)


def test_every_shipped_spec_has_a_shrink_entry():
    assert ALL_SPECS == SPECS


@pytest.mark.parametrize("path", SPECS)
def test_full_size_spec_compiles_and_its_claims_hold(path):
    c = compiler.compile(os.path.join(ROOT, path))
    assert c.ok, "\n".join(d.render() for d in c.errors)
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        assert json.load(f)["$schema"] in ("schema.json", "../schema.json")
    for e in c.report["expect"]:
        assert e["ok"], e
    if c.report["budget"]:
        assert c.report["budget"]["verdict"] == "pass", c.report["budget"]


@pytest.mark.parametrize("path", SPECS)
def test_shrunk_spec_runs_in_torch(path):
    c = compiler.compile(os.path.join(ROOT, path), overrides=SHRINK[path])
    assert c.ok, "\n".join(d.render() for d in c.errors)
    assert c.report["params"]["total"] < 200_000
    model = rt.build(c, seed=0)
    g = c.graph
    assert sum(p.numel() for p in model.parameters()) == c.report["params"]["total"]
    declared = {k: tuple(w.shape) for n in g.nodes() for k, w in node_weights(n).items() if not w.tied_to}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items() if k in declared} == declared
    inputs = {k: torch.from_numpy(v) for k, v in make_inputs(c).items()}
    with torch.no_grad():
        out = model(**inputs)
    assert list(out) == model.output_names
    for (n, o), key in zip(g.outputs, model.output_names):
        want = tuple(d.eval(ENV) for d in g[n].outputs[o].shape)
        assert tuple(out[key].shape) == want, key
        assert torch.isfinite(out[key]).all(), key


# --- fVLM against transformers, driven as the release code drives it -----------------------------------------------
def _fvlm_reference(seed: int = 0):
    from transformers import Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    dino = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                    image_size=42, patch_size=14, attn_implementation="eager")).eval()
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                                       rope_theta=100000.0, rms_norm_eps=1e-5,
                                       attn_implementation="eager")).eval()
    for p in list(dino.parameters()) + list(llm.parameters()):       # non-trivial LayerScale, norms, biases
        p.data.normal_(0, 0.2 if p.dim() > 1 else 1.0)
    extra = {"encoder.query_input_proj.weight": torch.randn(16, 8) * 0.3,
             "encoder.output_proj.weight": torch.randn(16, 16) * 0.3, "encoder.output_proj.bias": torch.randn(16),
             "dino_to_llm.weight": torch.randn(16, 16) * 0.3, "dino_to_llm.bias": torch.randn(16),
             "llm_to_query.weight": torch.randn(8, 16) * 0.3, "llm_to_query.bias": torch.randn(8),
             "q_static": torch.randn(1, 8), "q_init": torch.randn(1, 8)}
    state = {**{"encoder.dino." + k: v for k, v in dino.state_dict().items()},
             **{"llm." + k: v for k, v in llm.state_dict().items()}, **extra}
    return dino, llm, extra, state


def _ref_forward(dino, llm, x, frames, ids, mode):
    """The release code's FoveatedVLM forward (coarse_only, coarse_fine: logits at every position)."""
    B, Fr = frames.shape[:2]
    layers = dino.encoder.layer
    h = dino.embeddings(frames.flatten(0, 1))
    kv = []
    for layer in layers:
        n = layer.norm1(h)
        kv.append((layer.attention.k_proj(n), layer.attention.v_proj(n)))
        out = layer(h)
        h = out[0] if isinstance(out, tuple) else out

    def attend(q):
        z = F.linear(q, x["encoder.query_input_proj.weight"])[:, None]
        for layer, (k, v) in zip(layers, kv):
            N = z.shape[0]
            split = lambda t: t.view(N, -1, 2, 8).transpose(1, 2)  # noqa: E731
            q = split(layer.attention.q_proj(layer.norm1(z)))
            a = torch.softmax(q @ split(k).transpose(-1, -2) / 8 ** 0.5, -1)
            o = (a @ split(v)).transpose(1, 2).reshape(N, 1, 16)
            z = z + layer.layer_scale1(layer.attention.o_proj(o))
            z = z + layer.layer_scale2(layer.mlp(layer.norm2(z)))
        return F.linear(dino.layernorm(z)[:, 0], x["encoder.output_proj.weight"], x["encoder.output_proj.bias"])

    visual = lambda z: F.linear(z, x["dino_to_llm.weight"], x["dino_to_llm.bias"]) * 0.14   # noqa: E731
    z = attend(x["q_static"].expand(B * Fr, -1)).view(B, Fr, -1)
    if mode == "coarse_fine":
        hc = llm.model(inputs_embeds=visual(z)).last_hidden_state
        q = F.linear(hc, x["llm_to_query.weight"], x["llm_to_query.bias"])
        q = torch.cat([x["q_init"].expand(B, 1, -1), q[:, :-1]], 1)
        z = attend(q.flatten(0, 1)).view(B, Fr, -1)
    seq = torch.cat([visual(z), llm.model.embed_tokens(ids)], 1)
    return llm.lm_head(llm.model(inputs_embeds=seq).last_hidden_state)


def test_fvlm_matches_transformers_in_every_mode_and_loads_checkpoint_names():
    dino, llm, extra, state = _fvlm_reference()
    model = rt.build(fvlm_tiny(), seed=1)
    # the reference's dinov2 names are transformers 5.x's; the key map takes them (and 4.x's) and drops the tied head
    assert "llm.lm_head.weight" in state
    rt.load_state_dict_mapped(model, state, fvlm_key_map())
    v4_names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    v4 = {}
    for k, t in state.items():
        for a, b in v4_names.items():
            k = k.replace(a, b)
        v4[k] = t
    rt.load_state_dict_mapped(model, v4, fvlm_key_map())              # the release checkpoint's (4.x) layout
    g = torch.Generator().manual_seed(0)
    frames, ids = torch.randn(2, 3, 3, 28, 28, generator=g), torch.randint(0, 64, (2, 5), generator=g)
    node = model.node("fvlm")
    with torch.no_grad():
        for mode in ("coarse_only", "coarse_fine"):
            want = _ref_forward(dino, llm, extra, frames, ids, mode)
            torch.testing.assert_close(node(frames, ids, mode=mode), want, atol=2e-5, rtol=1e-4)
        # autoregressive: frame t's query comes from the hidden state after frame t-1 (cached), then the text
        ar = node(frames, ids, mode="autoregressive")
        B = 2
        kv = node.encode_frames(frames.flatten(0, 1))
        q, seq = node.q_init.expand(B, -1), []
        for t in range(3):
            z = node.query_attend(q, [(k.view(B, 3, *k.shape[1:])[:, t], v.view(B, 3, *v.shape[1:])[:, t])
                                      for k, v in kv])
            seq.append(node.visual(z)[:, None])
            h = llm.model(inputs_embeds=torch.cat(seq, 1)).last_hidden_state      # full recompute, no cache
            q = torch.nn.functional.linear(h[:, -1], node.llm_to_query.weight, node.llm_to_query.bias)
        full = torch.cat(seq + [llm.model.embed_tokens(ids)], 1)
        torch.testing.assert_close(ar, llm.lm_head(llm.model(inputs_embeds=full).last_hidden_state),
                                   atol=2e-5, rtol=1e-4)
        assert torch.equal(model(frames=frames, input_ids=ids)["fvlm"], node(frames, ids, mode="coarse_fine"))
        # greedy generate with the KV cache == argmax over full recomputes
        got = node.generate(frames, ids, 4, mode="coarse_only")
        cur = ids
        for i in range(4):
            nxt = node(frames, cur, mode="coarse_only")[:, -1].argmax(-1, keepdim=True)
            assert torch.equal(got[:, i:i + 1], nxt)
            cur = torch.cat([cur, nxt], 1)
    with pytest.raises(ValueError, match="unknown fVLM mode"):
        node(frames, ids, mode="fine_only")


# --- nanoVLM: the specs are the importer's output for nanoVLM's presets ---------------------------------------------
PRESET_CONFIGS = {
    "specs/nanovlm/original_small.json": dict(vit_img_size=224, vit_patch_size=16, lm_hidden_dim=576,
                                              lm_inter_dim=1536, lm_n_heads=9, lm_n_kv_heads=3, lm_n_blocks=30,
                                              mp_pixel_shuffle_factor=2),
    "specs/nanovlm/default.json": {},
    # the amazingvince/nanoVLM fork's get_dinov3_gemma_config() after from_pretrained (its config.json's keys)
    "specs/nanovlm/dinov3_gemma_fork.json": dict(
        vit_architecture="dinov3", vit_cls_flag=True, vit_num_registers=4, vit_use_swiglu=True, vit_layer_scale=True,
        vit_layer_scale_init=1.0, vit_img_size=224, vit_patch_size=16, vit_hidden_dim=384, vit_inter_dim=1536,
        vit_n_heads=6, vit_n_blocks=12, vit_ln_eps=1e-5, lm_architecture="gemma", lm_base_vocab_size=262144,
        extra_token_amount=17, lm_hidden_dim=640, lm_inter_dim=2048, lm_n_heads=4, lm_n_kv_heads=1, lm_head_dim=256,
        lm_n_blocks=18, lm_rms_eps=1e-6, lm_re_base=1000000.0, lm_max_position_embeddings=32768,
        mp_handle_special_tokens=True, mp_pixel_shuffle_factor=2),
}


@pytest.mark.parametrize("path", sorted(PRESET_CONFIGS))
def test_nanovlm_spec_equals_importer_output(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        shipped = json.load(f)
    imported = spec_from_nanovlm_config(PRESET_CONFIGS[path])
    def strip(layers):
        return [{**x, "params": {k: v for k, v in x["params"].items() if k != "note"}} for x in layers]
    assert strip(shipped["layers"]) == strip(imported["layers"])
    assert [i["shape"] for i in shipped["inputs"]] == [i["shape"] for i in imported["inputs"]]


def test_nanovlm_checkpoint_loads_with_the_identity_map():
    c = compiler.compile(os.path.join(ROOT, "specs/nanovlm/original_small.json"),
                         overrides=SHRINK["specs/nanovlm/original_small.json"])
    src, dst = rt.build(c, seed=3), rt.build(c, seed=4)
    state = dict(src.state_dict())                  # holds decoder.head.weight too (tied), as torch.save does
    state["decoder.rotary_embd.inv_freq"] = torch.zeros(4)     # a buffer a checkpoint may carry: dropped
    assert "decoder.head.weight" in state
    rt.load_state_dict_mapped(dst, state, nanovlm_key_map())
    inputs = {k: torch.from_numpy(v) for k, v in make_inputs(c).items()}
    with torch.no_grad():
        assert torch.equal(src(**inputs)["decoder.head"], dst(**inputs)["decoder.head"])


def test_merge_image_tokens_is_nanovlms_overwrite():
    c = compiler.compile(spec([layer("Embedding", {"num_embeddings": 10, "embedding_dim": 4}, id="emb"),
                               layer("MergeImageTokens", {"image_token_id": 9}, inputs=["emb", "img", "input_ids"])],
                              [{"name": "input_ids", "kind": "ids", "shape": ["B", 6]}, tokens(4, 2, "img")]))
    m = rt.build(c)
    ids = torch.tensor([[1, 9, 9, 2, 3, 4], [9, 5, 9, 6, 7, 8]])
    img = torch.randn(2, 2, 4)
    with torch.no_grad():
        out = m(input_ids=ids, img=img)["layers.1"]
        want = m.emb.weight[ids].clone()
        want[ids == 9] = img.view(-1, 4)                         # nanoVLM's _replace_img_tokens_with_embd
        torch.testing.assert_close(out, want)
        with pytest.raises(ValueError, match="placeholder"):
            m(input_ids=torch.zeros_like(ids), img=img)


# --- Oculus: the written-out language model is components/lfm2_1.2b.json ---------------------------------------------
def test_oculus_language_model_is_the_lfm2_component():
    with open(os.path.join(ROOT, "specs/oculus.json"), encoding="utf-8") as f:
        oculus = {l.get("id"): l for l in json.load(f)["layers"]}
    with open(os.path.join(ROOT, "specs/components/lfm2_1.2b.json"), encoding="utf-8") as f:
        comp = json.load(f)
    expanded = {"lm." + s["id"]: s for s in DecoderLM.expand(DecoderLM.Params(**comp["params"]), {})}
    for lid, sub in expanded.items():
        mine = oculus[lid]
        assert mine["type"] == sub["type"], lid
        want = {k: v for k, v in sub["params"].items() if k not in ("tie", "dim", "in_features")}
        got = {k: v for k, v in mine["params"].items() if k != "note"}
        for k, v in want.items():
            if k in ("norm_offset", "post_norms", "role") or (k == "offset" and v == 0.0):
                continue
            assert got.get(k) == v, (lid, k, got.get(k), v)
    assert oculus["lm.lm_head"]["params"]["tie"] == "lm.model.embed_tokens"


# --- properties of the generative ops --------------------------------------------------------------------------------
def test_resampler_ignores_media_order_and_reads_the_media():
    c = compiler.compile(spec([layer("PerceiverResampler", {"num_latents": 3, "embed_dim": 8, "num_layers": 2,
                                                            "num_heads": 2, "head_dim": 4, "ff_dim": 16})],
                              [tokens(6, 5)]))
    m = rt.build(c, seed=0)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        y = m(x=x)["layers.0"]
        torch.testing.assert_close(m(x=x[:, torch.randperm(5)])["layers.0"], y)   # no positions on media
        assert not torch.allclose(m(x=x + 1)["layers.0"], y)
    assert y.shape == (2, 3, 8)


def test_flow_head_takes_t_as_keyword_without_a_time_input():
    c = compiler.compile(spec([layer("FlowMatchingHead", {"out_dim": 4, "freq_dim": 8})], [tokens(8, 3)]))
    m = rt.build(c)
    head, x = m.node("layers.0"), torch.randn(2, 3, 8)
    with torch.no_grad():
        a, b = head(x, t=torch.tensor([0.1, 0.9])), head(x, t=torch.tensor([0.9, 0.1]))
        assert a.shape == (2, 3, 4) and not torch.allclose(a, b)
        torch.testing.assert_close(a[0], head(x[:1], t=torch.tensor([0.1]))[0])
    with pytest.raises(TypeError, match="flow time"):
        m(x=x)


def test_vqvae_decoder_snaps_to_codes_straight_through():
    c = compiler.compile(spec([layer("VQVAEDecoder", {"channels": [6, 4], "codebook_size": 7})],
                              [image(3, 2, 2, "z")]))
    m = rt.build(c, seed=0)
    dec = m.node("layers.0")
    z = torch.randn(1, 3, 2, 2, requires_grad=True)
    zq = dec.nearest_code(z)
    E = dec.codebook.weight
    for i in range(2):
        for j in range(2):
            d = ((E - z[0, :, i, j]) ** 2).sum(1)
            torch.testing.assert_close(zq[0, :, i, j], E[d.argmin()])
    zq.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))                       # straight-through
    assert m(z=z.detach())["layers.0"].shape == (1, 3, 4, 4)
