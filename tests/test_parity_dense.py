"""Dense decoder families and rope scalings against transformers 5.x, in torch and MLX.

For each case (llama with biases, gemma3, lfm2, qwen2 with sliding layers, qwen3, mistral, gemma2 with both soft-caps,
phi3 with fused projections and longrope past its original context, phi3 with partial rotary, smollm3 with NoPE
layers, olmo2, Llama-3.x `llama3`, Llama yarn / dynamic, a relu2 MLP, Gemma-3 4B-style `linear` on the global layers
only) a tiny transformers model (eager attention, the exact path; weights perturbed so every tensor matters) is
written with `save_pretrained`; its config.json is imported, the spec built in each runtime, model.safetensors loaded
through `hf_key_map` strictly, and the fp32 logits compared (atol 1e-4 x max(1, |logits|)). Greedy generation equals
transformers' token for token for every case, in both runtimes (the rope-scaled ones cross their original context).
The cases are tests/hf_models.py's DENSE; full-size counts of one published config per family are its FULL
(tests/test_parity_lm.py).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch
from safetensors import safe_open

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from runtime_mlx import generate as mlx_generate
from runtime_torch.generate import generate as torch_generate
from tests.hf_models import DENSE as CASES
from tests.hf_models import V

def tolerance(want: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(want).max()))


def hf_model(case: str, seed: int = 0):
    M, C, kw = CASES[case]
    torch.manual_seed(seed)
    m = M(C(**kw, attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.25)
            else:
                p.add_(0.1 * torch.randn_like(p))       # norms away from their init (ones / zeros)
    return m


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
    """(case, transformers model, the folder save_pretrained wrote, its tensors, the compiled imported spec)."""
    case = request.param
    hf = hf_model(case)
    d = tmp_path_factory.mktemp(case)
    hf.save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    with safe_open(str(d / "model.safetensors"), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    c = compiler.compile(spec_from_hf_config(config))
    assert c.ok, "\n".join(e.render() for e in c.errors)
    return case, hf, config, tensors, c


def torch_model(saved):
    _, _, config, tensors, c = saved
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, {k: torch.from_numpy(v) for k, v in tensors.items()},
                              hf_key_map(config["model_type"]), strict=True)
    return model.eval()


def mlx_model(saved):
    _, _, config, tensors, c = saved
    model = runtime_mlx.build(c, init=False)
    runtime_mlx.load_state_dict_mapped(model, {k: mx.array(v) for k, v in tensors.items()},
                                       hf_key_map(config["model_type"]), strict=True)
    return model


IDS = torch.randint(3, V, (2, 21), generator=torch.Generator().manual_seed(1))   # past windows and original contexts


def logits(saved, runtime: str) -> np.ndarray:
    if runtime == "transformers":
        with torch.no_grad():
            return saved[1](input_ids=IDS).logits.numpy()
    if runtime == "torch":
        with torch.no_grad():
            return torch_model(saved)(input_ids=IDS)["lm.lm_head"].numpy()
    return np.array(mlx_model(saved)(input_ids=mx.array(IDS.numpy()))["lm.lm_head"])


@pytest.mark.parametrize("runtime", ["torch", "MLX"])
def test_logits_match_transformers(saved, runtime):
    want, got = logits(saved, "transformers"), logits(saved, runtime)
    diff = float(np.abs(got - want).max())
    print(f"{saved[0]}: {runtime} max |logits diff| = {diff:.2e} (logits up to {np.abs(want).max():.1f})")
    assert diff <= tolerance(want)


PROMPT, NEW = 6, 14


def test_greedy_generate_equals_transformers(saved):
    case, hf = saved[:2]
    ids = IDS[:1, :PROMPT]
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, max_new_tokens=NEW,
                       eos_token_id=None, pad_token_id=0).tolist()
    got_t = torch_generate(torch_model(saved), ids, NEW).tolist()
    got_m = np.array(mlx_generate.generate(mlx_model(saved), ids.numpy(), NEW)).tolist()
    assert got_t == want, case
    assert got_m == want, case
    assert len(set(want[0][PROMPT:])) > 2, "degenerate test: the model repeats one token"


@pytest.mark.parametrize("case", list(CASES))
def test_defaults_table_agrees_with_transformers(case):
    """A config.json holding only some keys (legacy spellings included) imports as transformers' config class fills
    it in and writes it back (compiler/importers/hf.py's DEFAULTS and rope reading)."""
    _, C, kw = CASES[case]
    full = C(**kw).to_dict()
    sparse = dict(kw, model_type=full["model_type"])
    assert spec_from_hf_config(sparse)["layers"] == spec_from_hf_config(full)["layers"]
