"""AdaLNZeroBlock and FlowMatchingHead(block="adaln_zero") against an independent DiT block.

`RefDiTBlock` below is written from the DiT paper's definition (Peebles & Xie 2023, sec. 3.2 and fig. 3) in the
structure of its reference implementation (`DiTBlock`: a parameter-free LayerNorm (eps 1e-6), timm's `Attention`
with a packed qkv and a `proj`, timm's `Mlp` with fc1 / GELU(tanh) / fc2, `adaLN_modulation` = SiLU then a Linear to
6 D, zero-initialised), with explicit softmax attention. Counts and outputs of omnic's block (torch and MLX) are
checked against it, the identity at initialisation, the FLOP rule against torch's counter, and the flow-matching
head built from such blocks against a reference composition.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compiler
import runtime_torch as rt
from tests.op_examples import layer, spec, tokens, vector


# --- the reference ---------------------------------------------------------------------------------------------------
class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads, self.hs = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.hs).permute(2, 0, 3, 1, 4)
        attn = ((q * self.hs ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RefDiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cond: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RefAttention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = RefMlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond, 6 * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)             # adaLN-Zero
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


# (D, heads, C, mlp_ratio, qkv_bias)
CASES = [(16, 4, 16, 4.0, True), (12, 3, 8, 2.0, True), (16, 2, 16, 4.0, False)]


def block_spec(D, heads, C, ratio, qkv_bias, depth=1):
    """`depth` blocks dit0, dit1, ... each reading the previous one's tokens and the condition c."""
    params = {"num_heads": heads, "ff_dim": int(D * ratio), "qkv_bias": qkv_bias}
    blocks = [layer("AdaLNZeroBlock", params, id=f"dit{i}", inputs=[f"dit{i - 1}" if i else "x", "c"])
              for i in range(depth)]
    return spec(blocks, [tokens(D, 5), vector(C, "c")])


def randomised(model, seed: int = 0, std: float = 0.3) -> dict[str, torch.Tensor]:
    """A state dict of random values (the zero modulation replaced too, so every tensor matters)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * std for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return sd


@pytest.mark.parametrize("case", CASES)
def test_counts_and_outputs_equal_the_reference(case):
    D, heads, C, ratio, qkv_bias = case
    c = compiler.compile(block_spec(*case)).raise_for_errors()
    ref = RefDiTBlock(D, heads, C, ratio, qkv_bias)
    assert c.report["params"]["total"] == sum(p.numel() for p in ref.parameters())
    model = rt.build(c, seed=0)
    sd = randomised(model)
    ref.load_state_dict({k[len("dit0."):]: v for k, v in sd.items()}, strict=True)   # the reference's names
    x, cond = torch.randn(2, 5, D), torch.randn(2, C)
    with torch.no_grad():
        want = ref(x, cond)
        got = model(x=x, c=cond)["dit0"]
    assert (got - want).abs().max().item() < 1e-5
    assert (want - x).abs().max().item() > 0.1, "degenerate test: the block changes nothing"


def test_identity_at_initialisation():
    """adaLN-Zero: a freshly built stack of blocks returns its input exactly (every gate is 0)."""
    c = compiler.compile(block_spec(16, 4, 16, 4.0, True, depth=3)).raise_for_errors()
    model = rt.build(c, seed=7)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        out = model(x=x, c=torch.randn(2, 16))["dit2"]
    assert torch.equal(out, x)
    mod = model.node("dit0").t("adaLN_modulation.1.weight")
    assert torch.count_nonzero(mod) == 0 and torch.count_nonzero(model.node("dit0").t("mlp.fc1.weight")) > 0


def test_flop_rule_matches_torch_counter():
    """Linear products counted by torch's FlopCounterMode; CPU scaled_dot_product_attention counts 0 there, so the
    attention term (4 N^2 D per example) is checked separately against the reference's explicit matmuls."""
    from torch.utils.flop_counter import FlopCounterMode
    D, heads, C, ratio, qkv_bias = CASES[1]
    c = compiler.compile(block_spec(*CASES[1]), batch=2, context=5, with_nodes=True).raise_for_errors()
    want = next(n["flops_prefill"] for n in c.report["nodes"] if n["op"] == "AdaLNZeroBlock")
    block = rt.build(c, seed=0).node("dit0")
    x, cond = torch.randn(2, 5, D), torch.randn(2, C)
    with FlopCounterMode(display=False) as fc:
        block(x, cond)
    ref = RefDiTBlock(D, heads, C, ratio, qkv_bias)
    with FlopCounterMode(display=False) as fr:
        ref(x, cond)
    attention = 4 * 2 * 5 * 5 * D
    assert fc.get_total_flops() + attention == want
    assert fr.get_total_flops() == want                                      # explicit matmuls: all counted


@pytest.mark.parametrize("bad,match", [({"num_heads": 5}, "does not divide the width 16"),
                                       ({"num_heads": 4, "embed_dim": 8}, "embed_dim is 8")])
def test_bad_params_are_located_errors(bad, match):
    c = compiler.compile(spec([layer("AdaLNZeroBlock", bad, inputs=["x", "c"])], [tokens(16), vector(16, "c")]))
    assert not c.ok and len(c.errors) == 1
    assert match in c.errors[0].render() and "layers[0].params" in c.errors[0].render()


@pytest.mark.parametrize("repeat", [1, 3])
def test_a_block_without_its_condition_names_its_inputs(repeat):
    """Wiring inference gives a layer the previous output only: the error names both slots and says how to list them."""
    c = compiler.compile(spec([dict(layer("AdaLNZeroBlock", {"num_heads": 2}), repeat=repeat)],
                              [tokens(8), vector(6, "c")]))
    assert not c.ok and len(c.errors) == 1
    text = c.errors[0].render()
    assert "AdaLNZeroBlock takes 2 input(s) (x, c), got 1" in text and 'hint: list them in the layer\'s "inputs"' in text


# --- in the flow-matching head ---------------------------------------------------------------------------------------
HEAD = {"out_dim": 8, "hidden_dim": 12, "freq_dim": 8, "num_blocks": 2, "block": "adaln_zero", "num_heads": 3}


def head_spec(**over):
    return spec([layer("FlowMatchingHead", {**HEAD, **over}, id="flow", inputs=["x", "time"])],
                [tokens(16, 5), {"name": "time", "kind": "scalar", "shape": ["B"]}])


def ref_head(sd: dict, x, t, p=HEAD):
    """The head's forward (the op docstring) from reference parts: its DiT blocks are RefDiTBlocks."""
    from runtime_torch.ops.generative import timestep_embedding
    Fw = p["hidden_dim"]
    lin = lambda h, n: F.linear(h, sd[f"flow.{n}.weight"], sd[f"flow.{n}.bias"])       # noqa: E731
    c = lin(F.silu(lin(timestep_embedding(t * 1000.0, p["freq_dim"]), "time_embed.fc1")), "time_embed.fc2")
    h = lin(x, "in_proj")
    for i in range(p["num_blocks"]):
        blk = RefDiTBlock(Fw, p["num_heads"], Fw)
        pre = f"flow.blocks.{i}."
        blk.load_state_dict({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}, strict=True)
        h = blk(h, c)
    shift, scale = lin(F.silu(c), "final_ada").chunk(2, dim=-1)
    return lin(modulate(F.layer_norm(h, (Fw,), eps=1e-6), shift, scale), "out_proj")


def test_head_counts_and_outputs_equal_the_reference_composition():
    c = compiler.compile(head_spec()).raise_for_errors()
    Fw, n = HEAD["hidden_dim"], HEAD["num_blocks"]
    parts = [nn.Linear(HEAD["freq_dim"], Fw), nn.Linear(Fw, Fw), nn.Linear(16, Fw), nn.Linear(Fw, 2 * Fw),
             nn.Linear(Fw, HEAD["out_dim"])] + [RefDiTBlock(Fw, HEAD["num_heads"], Fw) for _ in range(n)]
    assert c.report["params"]["total"] == sum(p.numel() for m in parts for p in m.parameters())
    model = rt.build(c, seed=0)
    sd = randomised(model)
    x, t = torch.randn(2, 5, 16), torch.tensor([0.2, 0.9])
    with torch.no_grad():
        got = model(x=x, time=t)["flow"]
        want = ref_head(sd, x, t)
    assert (got - want).abs().max().item() < 1e-5


def test_head_starts_at_zero_velocity():
    """DiT's initialisation: zero modulation in every block and a zero final layer, so v(x, t) = 0 at init."""
    model = rt.build(compiler.compile(head_spec()).raise_for_errors(), seed=3)
    with torch.no_grad():
        out = model(x=torch.randn(2, 5, 16), time=torch.tensor([0.1, 0.5]))["flow"]
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("over,match", [({"conditioning": "add"}, "need conditioning 'adaln'"),
                                        ({"block": "mlp"}, "num_heads sets the adaln_zero blocks"),
                                        ({"num_heads": 5}, "does not divide the width 12")])
def test_head_bad_params_are_located_errors(over, match):
    c = compiler.compile(head_spec(**over))
    assert not c.ok
    assert any(match in d.render() for d in c.errors), [d.render() for d in c.errors]


def test_repeated_block_gets_the_condition_in_every_copy():
    """A repeated layer (`repeat`) chains its copies through the first input and gives every copy the side inputs:
    dit.1 and dit.2 read the condition c as dit.0 does. Torch: exactly the un-repeated stack dit0 -> dit1 -> dit2 at
    the same weights; MLX: the same within 1e-4."""
    import runtime_mlx  # first: the OpenBLAS preload precedes `import mlx`
    import mlx.core as mx
    from runtime_mlx import weights as mlx_weights
    D, heads, C, ratio, qkv_bias = CASES[1]
    params = {"num_heads": heads, "ff_dim": int(D * ratio), "qkv_bias": qkv_bias}
    rep = compiler.compile(spec([layer("AdaLNZeroBlock", params, id="dit", inputs=["x", "c"], repeat=3)],
                                [tokens(D, 5), vector(C, "c")])).raise_for_errors()
    assert [n.inputs for n in rep.graph.nodes() if n.op != "Input"] == [
        [("x", "out"), ("c", "out")], [("dit.0", "out"), ("c", "out")], [("dit.1", "out"), ("c", "out")]]
    flat = compiler.compile(block_spec(*CASES[1], depth=3)).raise_for_errors()
    assert rep.report["params"] == flat.report["params"] and rep.report["flops"] == flat.report["flops"]
    t_flat, t_rep = rt.build(flat), rt.build(rep)
    sd = randomised(t_flat)
    sd_rep = {f"dit.{k[3]}{k[4:]}": v for k, v in sd.items()}          # dit0.attn... -> dit.0.attn...
    t_rep.load_state_dict(sd_rep)
    x, cond = torch.randn(2, 5, D), torch.randn(2, C)
    with torch.no_grad():
        want = t_flat(x=x, c=cond)["dit2"]
        got = t_rep(x=x, c=cond)["dit.2"]
    assert torch.equal(got, want)
    m = runtime_mlx.build(rep)
    mlx_weights.load_state_dict_mapped(m, {k: mx.array(v.numpy()) for k, v in sd_rep.items()}, [])
    got_mlx = np.array(m(x=mx.array(x.numpy()), c=mx.array(cond.numpy()))["dit.2"])
    assert np.abs(got_mlx - want.numpy()).max() <= 1e-4 * max(1.0, float(want.abs().max()))
    assert (want - x).abs().max().item() > 0.1, "degenerate test: the blocks change nothing"


# --- MLX = torch -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["block", "head"])
def test_mlx_equals_torch(which):
    import runtime_mlx  # first: the OpenBLAS preload precedes `import mlx`
    import mlx.core as mx
    from runtime_mlx import weights as mlx_weights
    s = block_spec(*CASES[1], depth=2) if which == "block" else head_spec()
    c = compiler.compile(s).raise_for_errors()
    t = rt.build(c, seed=0)
    sd = randomised(t)
    m = runtime_mlx.build(c, seed=0)
    mlx_weights.load_state_dict_mapped(m, {k: mx.array(v.numpy()) for k, v in sd.items()}, [])
    if which == "block":
        ins = {"x": torch.randn(2, 5, 12), "c": torch.randn(2, 8)}
    else:
        ins = {"x": torch.randn(2, 5, 16), "time": torch.tensor([0.3, 0.7])}
    with torch.no_grad():
        want = next(iter(t(**ins).values())).numpy()
    got = np.array(next(iter(m(**{k: mx.array(v.numpy()) for k, v in ins.items()}).values())))
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    assert math.isfinite(float(np.abs(got).max()))
