"""The fast MLX generation path computes what the plain one does (runtime_mlx/generate.py, pack.py, cache.py, the
RoPE tables of kernels.py), on a tiny Llama with weights redrawn at a larger spread (so greedy decoding does not
repeat one token), written to a safetensors file and loaded by omnic and by mlx-lm's `models/llama.py`:

  * greedy tokens of `generate` (packed products, preallocated cache, pipelined steps) equal the plain path's
    (`pack=False`), the uncached argmax over the whole sequence, and mlx-lm's `generate_step`;
  * the K/V buffers are exactly as long as a prefill (or the reserve), then grow in 256-position steps, and the
    logits past 256 positions equal a full forward's;
  * packing changes no parameter and gives the same logits within fp tolerance, prefill and one-token steps; a
    parameter replaced after packing is used (the group falls back to separate products);
  * the CPU's RoPE tables (roll with a signed sin) equal rotate-half, and `mx.fast.rope` (the GPU's) agrees.
"""
from __future__ import annotations

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx

from compiler import compile
from runtime_mlx import kernels
from runtime_mlx import pack as mlx_pack
from runtime_mlx.cache import STEP, LayerCache
from runtime_mlx.generate import DecodeSession, generate

CFG = dict(family="llama", vocab_size=97, hidden=64, layers=2, heads=4, kv_heads=2, ff_dim=96, tie=False,
           rope_theta=10000.0, norm_eps=1e-5)
PROMPT = [[3, 14, 15, 92, 65, 35, 8]]
ATOL = 1e-4        # times max(1, max |logit|)


def close(a, b, atol: float = ATOL) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) <= atol * max(1.0, float(np.abs(b).max()))


def spec(**over) -> dict:
    return {"name": "tiny-llama", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
            "layers": [{"id": "lm", "type": "DecoderLM", "params": {**CFG, **over}}]}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A safetensors file of the tiny Llama's weights (torch layout), norms near 1, the rest N(0, 0.5)."""
    m = runtime_mlx.build(compile(spec()), seed=0)
    rng = np.random.RandomState(0)
    new = {}
    for name, w in m.named_parameters().items():
        base = 1.0 if "norm" in name else 0.0
        new[name] = mx.array((base + rng.randn(*w.shape) * (0.1 if "norm" in name else 0.5)).astype(np.float32))
    m.load_weights(list(new.items()))
    path = str(tmp_path_factory.mktemp("w") / "tiny.safetensors")
    runtime_mlx.save_weights(m, path)
    return path


def ours(path: str, **over):
    m = runtime_mlx.build(compile(spec(**over)), init=False)
    runtime_mlx.load_weights(m, path)
    return m


def mlx_lm_llama(path: str):
    from mlx_lm.models import llama
    args = llama.ModelArgs(model_type="llama", hidden_size=CFG["hidden"], num_hidden_layers=CFG["layers"],
                           intermediate_size=CFG["ff_dim"], num_attention_heads=CFG["heads"],
                           num_key_value_heads=CFG["kv_heads"], rms_norm_eps=CFG["norm_eps"],
                           vocab_size=CFG["vocab_size"], rope_theta=CFG["rope_theta"], tie_word_embeddings=False)
    model = llama.Model(args)
    model.load_weights([(k.removeprefix("lm."), v) for k, v in mx.load(path).items()], strict=True)
    mx.eval(model.parameters())
    return model


def uncached_greedy(m, ids: list[int], n: int) -> list[int]:
    """The whole sequence through the model at every step: no cache, no packing involved."""
    ids = list(ids)
    for _ in range(n):
        logits = m(input_ids=mx.array([ids]))["lm.lm_head"]
        ids.append(int(mx.argmax(logits[0, -1]).item()))
    return ids


def test_greedy_tokens_equal_the_plain_path_and_mlx_lm(weights_file):
    from mlx_lm.generate import generate_step
    n = 24
    plain = uncached_greedy(ours(weights_file), PROMPT[0], n)[len(PROMPT[0]):]
    assert len(set(plain)) > 3, plain                        # decoding does not collapse to one token
    fast = generate(ours(weights_file), mx.array(PROMPT), n)[0, len(PROMPT[0]):].tolist()
    unpacked = generate(ours(weights_file), mx.array(PROMPT), n, pack=False)[0, len(PROMPT[0]):].tolist()
    peer = [t for t, _ in generate_step(mx.array(PROMPT[0]), mlx_lm_llama(weights_file), max_tokens=n)]
    assert fast == plain == unpacked == peer


def test_batched_and_stopping_generation_equals_one_row_at_a_time(weights_file):
    m = ours(weights_file)
    rows = [PROMPT[0], [7, 7, 1, 2, 3, 50, 60]]
    both = generate(m, mx.array(rows), 10).tolist()
    for r, got in zip(rows, both):
        assert got == generate(ours(weights_file), mx.array([r]), 10)[0].tolist()
    eos = both[0][len(rows[0]) + 3]                           # row 0 produces it at its 4th new token
    stopped = generate(m, mx.array(rows[:1]), 10, eos_token_id=eos)[0].tolist()
    assert stopped == both[0][:stopped.index(eos, len(rows[0])) + 1]


def test_cache_is_exact_for_the_prefill_and_grows_in_steps_past_256(weights_file):
    m = ours(weights_file)
    rng = np.random.RandomState(1)
    seq = rng.randint(0, CFG["vocab_size"], (1, 270))
    full = m(input_ids=mx.array(seq))["lm.lm_head"]                        # (1, 270, V)
    s = DecodeSession(m)
    out = s.step(mx.array(seq[:, :250]))
    caches = list(s.caches.values())
    mx.eval(out, s.cache_arrays())
    assert [c.capacity for c in caches] == [250] * CFG["layers"]
    assert s.cache_nbytes() == sum(a.nbytes for c in caches for a in (c.k, c.v))
    assert close(out, full[:, :250])
    caps = []
    for t in range(250, 270):
        step = s.step(mx.array(seq[:, t:t + 1]))
        assert close(step[:, -1], full[:, t]), t
        caps.append(caches[0].capacity)
    assert caps[:6] == [STEP] * 6 and caps[6:] == [2 * STEP] * 14      # positions 251..256, then 257..270
    assert caches[0].n == 270 and caches[0].k.shape == (1, CFG["kv_heads"], 270, CFG["hidden"] // CFG["heads"])


def test_a_reserved_cache_is_made_once():
    c = LayerCache(reserve=300)
    k = mx.ones((1, 2, 5, 4))
    c.extend(k, k, None)
    for _ in range(10):
        c.extend(k[:, :, :1], k[:, :, :1], None)
    assert c.capacity == 300 and c.n == 15
    with pytest.raises(ValueError, match="batch x kv heads"):
        c.extend(mx.ones((2, 2, 1, 4)), mx.ones((2, 2, 1, 4)), None)


@pytest.mark.parametrize("bias", [False, True])
def test_packing_keeps_parameters_and_logits(weights_file, bias, tmp_path):
    over = {"attn_bias": ["q", "k", "v"]} if bias else {}
    if bias:                                                   # the biased file: the same weights plus biases
        m0 = runtime_mlx.build(compile(spec(**over)), seed=3)
        m0.load_weights(list(mx.load(weights_file).items()), strict=False)
        path = str(tmp_path / "bias.safetensors")
        runtime_mlx.save_weights(m0, path)
    else:
        path = weights_file
    plain, packed = ours(path, **over), mlx_pack.pack(ours(path, **over))
    blocks = [packed.node(f"lm.model.layers.{i}") for i in range(CFG["layers"])]
    assert all(set(b.groups) == {"qkv", "gate_up"} for b in blocks)
    a, b = dict(plain.named_parameters()), dict(packed.named_parameters())
    assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]).item() for k in a)
    ids = mx.array(PROMPT)
    assert close(packed(input_ids=ids)["lm.lm_head"], plain(input_ids=ids)["lm.lm_head"])
    sp, su = DecodeSession(packed), DecodeSession(plain, pack=False)
    assert close(sp.step(ids), su.step(ids))
    for t in (5, 17, 40):                                      # the one-token path over the packed q|k|v
        x = mx.array([[t]])
        assert close(sp.step(x), su.step(x))


def test_a_parameter_replaced_after_packing_is_used(weights_file):
    m = mlx_pack.pack(ours(weights_file))
    blk = m.node("lm.model.layers.0")
    assert blk.fused("qkv") is not None
    blk.v["weight"] = mx.zeros_like(blk.v["weight"])           # e.g. load_weights of another checkpoint
    assert blk.fused("qkv") is None and blk.fused("gate_up") is not None
    ref = ours(weights_file)
    ref.node("lm.model.layers.0").v["weight"] = mx.zeros_like(blk.v["weight"])
    ids = mx.array(PROMPT)
    assert close(m(input_ids=ids)["lm.lm_head"], ref(input_ids=ids)["lm.lm_head"])
    assert generate(m, ids, 6).tolist() == generate(ref, ids, 6, pack=False).tolist()
    mlx_pack.pack(m)                                           # packing again re-groups from the new values
    assert blk.fused("qkv") is not None
    assert close(m(input_ids=ids)["lm.lm_head"], ref(input_ids=ids)["lm.lm_head"])


def test_a_model_quantised_after_packing_runs_its_quantised_products():
    from compiler.quantise import quant_plan
    from runtime_mlx import quantize as mq
    s = spec(hidden=64, ff_dim=128)                          # widths mlx.nn.quantize's groups divide
    c = compile(s).raise_for_errors()
    plan = quant_plan(c, "mlx", "8", 32)
    c = compile(s, format=plan.fmt.name).raise_for_errors()
    packed = mlx_pack.pack(runtime_mlx.build(c, seed=0, dtype="bfloat16"))
    assert packed.node("lm.model.layers.0").fused("qkv") is not None
    packed = mq.quantise(packed, plan)
    ref = mq.quantise(runtime_mlx.build(c, seed=0, dtype="bfloat16"), plan)
    blk = packed.node("lm.model.layers.0")
    assert "scales" in blk.q and blk.fused("qkv") is None and blk.fused("gate_up") is None
    ids = mx.array(PROMPT)
    assert mx.array_equal(packed(input_ids=ids)["lm.lm_head"], ref(input_ids=ids)["lm.lm_head"]).item()
    assert generate(packed, ids, 5).tolist() == generate(ref, ids, 5, pack=False).tolist()


@pytest.mark.parametrize("rd, hs", [(16, 16), (8, 16)])
def test_rope_tables_and_fast_rope_equal_rotate_half(rd, hs):
    rot = kernels.Rope(10000.0, rd)
    x = mx.array(np.random.RandomState(0).randn(2, 3, 5, hs).astype(np.float32))
    want = kernels.apply_rope(x, *rot.rows(300, 5, mx.float32), rd)      # positions 300..304: the tables grow
    got = rot.apply(x, 300)
    assert mx.array_equal(got, want).item()                   # the tables' rows are `rows`', the roll exact
    try:
        kernels.FAST_ROPE = True
        fast = rot.apply(x, 300)
    finally:
        kernels.FAST_ROPE = None
    assert close(fast, want, 1e-5)
