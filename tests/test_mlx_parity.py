"""Parity of the MLX runtime with mlx-lm and with the torch runtime on tiny decoder LMs, and its memory truth.

  * mlx-lm: a DecoderLM of family llama / gemma3 and mlx-lm's `models.llama` / `models.gemma3_text` with the same
    weights (omnic's names are transformers', which mlx-lm keeps) give the same logits, and the same greedy tokens
    with their KV caches (Gemma-3 decoding past its sliding window);
  * torch: greedy generation with the KV / conv cache equals the torch runtime's token for token (llama, gemma3,
    lfm2, qwen2_moe), both loading one safetensors file;
  * memory: weight bytes and KV-cache bytes after a prefill equal the compiler's report exactly (fp32).
Weights are redrawn with a larger spread than the init's N(0, 0.02), so greedy decoding does not repeat one token.
"""
from __future__ import annotations

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch

import runtime_torch
from compiler import compile
from runtime_mlx import generate as mlx_generate
from runtime_mlx import memory
from runtime_mlx import weights as mlx_weights
from runtime_torch import generate as torch_generate
from runtime_torch import weights as torch_weights

ATOL = 1e-4   # times max(1, max |logit|): the redrawn weights give logits of about 10


def close(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) <= ATOL * max(1.0, float(np.abs(b).max()))
LM = {"vocab_size": 97, "hidden": 64, "layers": 4, "heads": 4, "kv_heads": 2, "ff_dim": 96}
FAMILIES = {
    "llama": dict(LM, family="llama", tie=False, rope_theta=10000.0, norm_eps=1e-5),
    "gemma3": dict(LM, family="gemma3", tie=False, head_dim=16, query_pre_attn_scalar=16.0, sliding_window=4,
                   sliding_window_pattern=2),
    "lfm2": dict(LM, family="lfm2", layer_types=["conv", "full_attention", "conv", "full_attention"]),
    "qwen2_moe": dict(LM, family="qwen2_moe", ff_dim=None, num_experts=4, top_k=2, expert_dim=32,
                      shared_expert_dim=48),
}


def lm_spec(family: str) -> dict:
    params = {k: v for k, v in FAMILIES[family].items() if v is not None}
    return {"name": f"tiny-{family}", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
            "layers": [{"id": "lm", "type": "DecoderLM", "params": params}]}


def random_weights(model, std: float = 0.5, seed: int = 0) -> dict[str, np.ndarray]:
    """Torch-layout arrays for every owned tensor: norms near their identity, everything else N(0, std)."""
    rng = np.random.RandomState(seed)
    out = {}
    for name in sorted(model.weight_decls):
        w = model.weight_decls[name]
        if w.tied_to:
            continue
        scale = 0.1 if w.role == "norm" else std
        base = 1.0 if w.init_rule == "ones" else 0.0
        out[name] = (base + scale * rng.randn(*w.shape)).astype(np.float32)
    return out


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    """(family, compiled, MLX model, torch model), both loaded from one safetensors file."""
    from safetensors.numpy import save_file
    family = request.param
    c = compile(lm_spec(family), batch=1, context=16).raise_for_errors()
    m = runtime_mlx.build(c, init=False)
    path = tmp_path_factory.mktemp(family) / "w.safetensors"
    save_file(random_weights(m), path)
    mlx_weights.load_weights(m, path)
    t = runtime_torch.build(c, init=False).eval()
    torch_weights.load_weights(t, path)
    return family, c, m, t


PROMPT = [[5, 17, 3, 42, 8, 61, 29]]


def test_logits_match_torch(pair):
    family, c, m, t = pair
    ids = np.array(PROMPT)
    a = np.array(m(input_ids=mx.array(ids))["lm.lm_head"])
    with torch.no_grad():
        b = t(input_ids=torch.from_numpy(ids))["lm.lm_head"].numpy()
    assert close(a, b), float(np.abs(a - b).max())


def test_greedy_generation_matches_torch(pair):
    family, c, m, t = pair
    n = 12                                        # prompt 7 + 12 > gemma3's window 4
    ours = np.array(mlx_generate.generate(m, mx.array(PROMPT), n))
    ref = torch_generate.generate(t, torch.tensor(PROMPT), n).numpy()
    assert ours.tolist() == ref.tolist()
    assert len(set(ours[0, 7:].tolist())) > 2, "degenerate test: greedy decoding repeats one token"


def test_cached_decoding_equals_full_recompute(pair):
    family, c, m, t = pair
    seq = mlx_generate.generate(m, mx.array(PROMPT), 6)
    full = m(input_ids=seq[:, :-1])["lm.lm_head"]
    assert mx.array_equal(mx.argmax(full[:, 6:], axis=-1), seq[:, 7:]).item()


def test_sampling_is_seeded_and_top1_is_greedy(pair):
    family, _, m, _ = pair
    if family != "llama":
        pytest.skip("one family suffices")
    ids = mx.array(PROMPT)
    a = mlx_generate.generate(m, ids, 6, do_sample=True, temperature=0.8, top_k=5, seed=1)
    b = mlx_generate.generate(m, ids, 6, do_sample=True, temperature=0.8, top_k=5, seed=1)
    assert mx.array_equal(a, b).item()
    top1 = mlx_generate.generate(m, ids, 6, do_sample=True, top_k=1, seed=3)
    assert mx.array_equal(top1, mlx_generate.generate(m, ids, 6)).item()
    greedy = mlx_generate.generate(m, ids, 6)
    eos = greedy[0, 8].item()                                   # the second generated token
    stopped = mlx_generate.generate(m, ids, 6, eos_token_id=eos)
    assert stopped.shape[1] <= 9 and stopped[0, -1].item() == eos


VLMS = ["specs/nanovlm/original_small.json", "specs/nanovlm/dinov3_gemma.json", "specs/oculus.json"]


@pytest.mark.parametrize("path", VLMS)
def test_vlm_generate_equals_recomputation_and_torch(path):
    """A VLM decodes with its caches (image tokens cached once by the prefill) as greedy recomputation of the
    whole sequence does, and as the torch runtime does (same seed, same weights)."""
    import os

    from tests.shrink import ROOT, SHRINK, make_inputs
    c = compile(os.path.join(ROOT, path), overrides=SHRINK[path]).raise_for_errors()
    m = runtime_mlx.build(c, seed=3)
    raw = make_inputs(c, seed=1, env={"B": 2, "T": 8, "F": 2})
    ids_name = next(n for n in m.input_names if c.graph[n].out.kind == "ids")
    session = mlx_generate.DecodeSession(m)
    others = {k: mx.array(v) for k, v in raw.items() if k != ids_name}
    ids = mx.array(raw[ids_name])
    got = mlx_generate.generate(m, ids, 5, logits=session.logits, **others)
    seq = ids
    for _ in range(5):
        logits = m(**{ids_name: seq}, **others)[session.logits]
        seq = mx.concatenate([seq, mx.argmax(logits[:, -1], axis=-1, keepdims=True).astype(seq.dtype)], axis=1)
    assert got.tolist() == seq.tolist()
    t = runtime_torch.build(c, seed=3).eval()
    ref = torch_generate.generate(t, torch.from_numpy(raw[ids_name]), 5, logits=session.logits,
                                  **{k: torch.from_numpy(v) for k, v in raw.items() if k != ids_name})
    assert got.tolist() == ref.tolist()


# --- mlx-lm --------------------------------------------------------------------------------------------------------
def mlx_lm_model(family: str, ours):
    """The mlx-lm model of the same config, holding our weights (names minus the node prefix `lm.`)."""
    p = FAMILIES[family]
    if family == "llama":
        from mlx_lm.models import llama
        args = llama.ModelArgs(model_type="llama", hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                               intermediate_size=p["ff_dim"], num_attention_heads=p["heads"],
                               num_key_value_heads=p["kv_heads"], rms_norm_eps=p["norm_eps"],
                               vocab_size=p["vocab_size"], rope_theta=p["rope_theta"], tie_word_embeddings=False)
        model = llama.Model(args)
    else:
        from mlx_lm.models import gemma3_text
        args = gemma3_text.ModelArgs(model_type="gemma3_text", hidden_size=p["hidden"],
                                     num_hidden_layers=p["layers"], intermediate_size=p["ff_dim"],
                                     num_attention_heads=p["heads"], head_dim=p["head_dim"], rms_norm_eps=1e-6,
                                     vocab_size=p["vocab_size"], num_key_value_heads=p["kv_heads"],
                                     rope_theta=1e6, rope_local_base_freq=1e4,
                                     query_pre_attn_scalar=p["query_pre_attn_scalar"],
                                     sliding_window=p["sliding_window"],
                                     sliding_window_pattern=p["sliding_window_pattern"])
        model = gemma3_text.Model(args)
    weights = {k.removeprefix("lm."): v for k, v in ours.named_parameters().items()}
    weights = model.sanitize(weights) if hasattr(model, "sanitize") else weights
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_same_logits_and_tokens_as_mlx_lm(family, pair):
    if pair[0] != family:
        pytest.skip("runs on its own family's pair")
    _, c, m, _ = pair
    ref = mlx_lm_model(family, m)
    ids = mx.array(PROMPT)
    ours = m(input_ids=ids)["lm.lm_head"]
    theirs = ref(ids)
    assert close(ours, theirs), mx.abs(ours - theirs).max().item()
    # greedy decoding with mlx-lm's own caches (RotatingKVCache for Gemma's sliding layers)
    cache = ref.make_cache() if hasattr(ref, "make_cache") else __import__(
        "mlx_lm.models.cache", fromlist=["make_prompt_cache"]).make_prompt_cache(ref)
    logits = ref(ids, cache=cache)
    toks = []
    for _ in range(12):
        nxt = mx.argmax(logits[:, -1], axis=-1, keepdims=True)
        toks.append(nxt.item())
        logits = ref(nxt, cache=cache)
    ours_seq = mlx_generate.generate(m, ids, 12)
    assert ours_seq[0, 7:].tolist() == toks


# --- memory truth -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,context", [(1, 7), (2, 3)])
def test_weight_and_kv_bytes_equal_the_report(pair, batch, context):
    family, _, _, _ = pair
    c = compile(lm_spec(family), batch=batch, context=context, format="fp32").raise_for_errors()
    m = runtime_mlx.build(c, seed=0)
    rep = c.report["memory"]
    assert memory.weight_bytes(m) == rep["weights"]["fp32"]
    ids = mx.array(np.arange(batch * context).reshape(batch, context) % 90 + 1)
    res = memory.measure_prefill(m, ids)
    assert res["cache"] == rep["decode_state"]["fp32"]
    assert res["peak"] >= res["weights"] + res["cache"]


def test_sliding_cache_holds_window_minus_one(pair):
    """A sliding layer keeps window - 1 positions between steps (as transformers; the compiler's state rule too)."""
    family, _, m, _ = pair
    if family != "gemma3":
        pytest.skip("gemma3 only")
    W = FAMILIES["gemma3"]["sliding_window"]
    session = mlx_generate.DecodeSession(m)
    session.step(mx.array(PROMPT))
    for name, cache in session.caches.items():
        sliding = m.node(name).window is not None
        assert cache.k.shape[2] == (W - 1 if sliding else len(PROMPT[0]))


def test_forward_peak_is_measured(pair):
    _, c, m, _ = pair
    res = memory.measure_forward_peak(m, {"input_ids": mx.array(PROMPT)})
    assert res["weights"] == memory.weight_bytes(m) > 0
    assert res["peak"] >= res["weights"] + res["outputs"]
