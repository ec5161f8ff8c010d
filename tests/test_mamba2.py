"""Mamba2Block / Mamba2LM against transformers 5.x's Mamba2Model / Mamba2ForCausalLM (its torch path).

A tiny transformers model (two layers, two groups of four heads, a scan chunk of 5 so that 13 tokens span three
chunks) is built with a fixed seed, its weights perturbed so that every tensor matters, and written with
`save_pretrained`; its config is imported (`omnic import-hf`'s importer), the spec compiled and built, the file
loaded strictly through the importer's key map, and the outputs compared (fp32, 1e-4) in torch and in MLX.
Counts: the compiler's report == the instantiated transformers modules (tiny, tied and untied) == transformers on
the meta device for published configs (mamba2-130m, mamba2-370m). FLOPs: the rule == torch's FlopCounterMode on
the block. Decoding through the declared state (SSM state, convolution inputs), in both runtimes: `generate` ==
transformers' generate, cached steps == the full forward, the caches' bytes == the report's decode state, the FLOPs
of a decoded token == the counter's.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from runtime_torch.generate import DecodeSession, generate

warnings.filterwarnings("ignore", message=".*(causal_conv1d|mamba_ssm).*")

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_heads=8, head_dim=8, state_size=16, n_groups=2,
            conv_kernel=4, chunk_size=5, expand=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
# published Mamba-2 checkpoints (state-spaces/mamba2-*, as transformers' conversion writes their configs)
PUBLISHED = {
    "mamba2-130m": dict(vocab_size=50288, hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64,
                        state_size=128, n_groups=1, conv_kernel=4, expand=2, tie_word_embeddings=True),
    "mamba2-370m": dict(vocab_size=50288, hidden_size=1024, num_hidden_layers=48, num_heads=32, head_dim=64,
                        state_size=128, n_groups=1, conv_kernel=4, expand=2, tie_word_embeddings=True),
}


#: the README's family table (compiler/importers/coverage.py) names these: the tiny case the logits tests use, and
#: the published configs with their transformers meta-device counts (asserted below)
CASES = {"tiny": TINY}
COUNTS = {"mamba2-130m": (tf.Mamba2ForCausalLM, tf.Mamba2Config, PUBLISHED["mamba2-130m"], 128_989_632),
          "mamba2-370m": (tf.Mamba2ForCausalLM, tf.Mamba2Config, PUBLISHED["mamba2-370m"], 368_346_624)}


def hf_mamba2(tie: bool = False, seed: int = 0, **over):
    """The tiny transformers Mamba2ForCausalLM, weights perturbed from `seed` (A_log, dt_bias, D, norms too)."""
    torch.manual_seed(seed)
    m = tf.Mamba2ForCausalLM(tf.Mamba2Config(**{**TINY, **over}, tie_word_embeddings=tie)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return m


def saved(hf, tmp_path) -> dict[str, torch.Tensor]:
    """The tensors of hf's `save_pretrained` file, and the config.json it wrote (parsed)."""
    hf.save_pretrained(tmp_path)
    with open(tmp_path / "config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    return load_file(str(tmp_path / "model.safetensors")), cfg


def compiled_from(cfg: dict, **kw):
    c = compiler.compile(spec_from_hf_config(cfg), with_nodes=True, **kw)
    assert c.ok, "\n".join(d.render() for d in c.errors)
    return c


def omnic_torch(tmp_path, tie: bool = False):
    """(transformers model, omnic torch model loaded from its save_pretrained file, compiled spec)."""
    hf = hf_mamba2(tie)
    tensors, cfg = saved(hf, tmp_path)
    c = compiled_from(cfg)
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, tensors, hf_key_map("mamba2"), strict=True)
    return hf, model.eval(), c


IDS = torch.randint(3, 96, (2, 13), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def tiny(request, tmp_path_factory):
    """(transformers model, omnic torch model, compiled spec, the save_pretrained directory), untied and tied."""
    path = tmp_path_factory.mktemp("mamba2")
    return (*omnic_torch(path, request.param), path)


# --- counts ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True])
def test_counts_equal_the_instantiated_transformers_modules(tie):
    hf = hf_mamba2(tie)
    c = compiled_from(hf.config.to_dict())
    n_hf = sum(p.numel() for p in hf.parameters())              # tied lm_head counted once, as in the report
    assert c.report["params"]["total"] == n_hf
    backbone = sum(n["params"] for n in c.report["nodes"] if n["name"].startswith("lm.backbone."))
    assert backbone == sum(p.numel() for p in tf.Mamba2Model(hf.config).parameters())
    assert sum(p.numel() for p in rt.build(c, init=False).parameters()) == n_hf


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_counts_equal_transformers_on_meta(name):
    cfg = tf.Mamba2Config(**PUBLISHED[name])
    with torch.device("meta"):
        want = sum(p.numel() for p in tf.Mamba2ForCausalLM(cfg).parameters())
    c = compiled_from(cfg.to_dict(), batch=1, context=2048)
    assert c.report["params"]["total"] == want == COUNTS[name][3], name
    print(f"{name}: {want:,} parameters")


def test_declared_names_are_the_checkpoints(tmp_path):
    """Every tensor transformers saves, mapped by the importer's key map, is a declared weight, and no more."""
    hf = hf_mamba2()
    tensors, cfg = saved(hf, tmp_path)
    c = compiled_from(cfg)
    from compiler.cost import node_weights
    declared = {k: tuple(w.shape) for n in c.graph.nodes() for k, w in node_weights(n).items()}
    got = {"lm." + k: tuple(t.shape) for k, t in tensors.items()}
    assert got == declared


def test_seeded_init_is_transformers_mamba2_init(monkeypatch):
    """A built model's A_log and dt_bias are what transformers' Mamba2Mixer.init_mamba2_weights draws, bit for bit,
    from the same generator (the tensor's own, runtime_common/init.py), in torch and in MLX; MLX without torch draws
    from the same distributions."""
    import runtime_mlx  # first: the OpenBLAS preload precedes `import mlx`
    from compiler.ops.mamba2 import A_LOG_INIT, DT_BIAS_INIT
    from runtime_common.init import tensor_seed
    from runtime_mlx import init as mlx_init
    hf = tf.Mamba2ForCausalLM(tf.Mamba2Config(**TINY)).eval()
    c = compiled_from(hf.config.to_dict())
    seed = 5
    model, mm = rt.build(c, seed=seed), runtime_mlx.build(c, seed=seed)
    for i, layer in enumerate(hf.backbone.layers):
        mixer = layer.mixer
        for attr in ("A_log", "dt_bias"):
            name = f"lm.backbone.layers.{i}.mixer.{attr}"
            torch.manual_seed(tensor_seed(seed, name))            # the generator transformers draws dt from
            with torch.no_grad():
                mixer.init_mamba2_weights()
            want = getattr(mixer, attr).detach()
            assert torch.equal(model.param(name).detach(), want), name
            assert np.array_equal(np.array(mm.param(name)), want.numpy()), name
    assert not torch.equal(model.param("lm.backbone.layers.0.mixer.dt_bias"),
                           model.param("lm.backbone.layers.1.mixer.dt_bias"))      # drawn, not a constant
    monkeypatch.setattr(mlx_init, "exact_across_runtimes", lambda: False)
    dt = np.log1p(np.exp(np.array(mlx_init.draw(DT_BIAS_INIT, (4096,), seed, "x"), dtype=np.float64)))  # softplus
    assert 0.001 * (1 - 1e-5) <= dt.min() and dt.max() <= 0.1 * (1 + 1e-5) and dt.std() > 0.01
    assert np.allclose(np.exp(np.array(mlx_init.draw(A_LOG_INIT, (8,), seed, "a"))), np.arange(1, 9), rtol=1e-6)


def test_older_embedding_name_loads(tiny):
    """Checkpoints that name the embedding `backbone.embedding.weight` (renamed by transformers' load hook) load."""
    hf, model, c, _ = tiny
    tensors = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    again = rt.build(c, init=False)
    rt.load_state_dict_mapped(again, tensors, hf_key_map("mamba2"), strict=True)
    assert torch.equal(again.state_dict()["lm.backbone.embeddings.weight"], hf.backbone.embeddings.weight)


def test_base_model_file_loads(tmp_path):
    """A Mamba2Model save_pretrained file (no `backbone.` prefix, no head) loads strictly into a tied Mamba2LM."""
    hf = hf_mamba2(tie=True)
    hf.backbone.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert "embeddings.weight" in tensors
    model = rt.build(compiled_from(hf.config.to_dict()), init=False)
    rt.load_state_dict_mapped(model, tensors, hf_key_map("mamba2"), strict=True)
    with torch.no_grad():
        assert (model(input_ids=IDS)["lm.lm_head"] - hf(input_ids=IDS).logits).abs().max().item() < 1e-4


# --- numerics --------------------------------------------------------------------------------------------------------
def test_logits_match_transformers(tiny):
    hf, model, _, _ = tiny
    tie = hf.config.tie_word_embeddings
    with torch.no_grad():
        want = hf(input_ids=IDS).logits
        got = model(input_ids=IDS)
    diff = (got["lm.lm_head"] - want).abs().max().item()
    print(f"tie={tie}: max |logits diff| = {diff:.2e} (logits up to {want.abs().max().item():.1f})")
    assert diff < 1e-4
    assert want.abs().max() > 1.0, "degenerate test: tiny logits"


def test_backbone_matches_mamba2model(tiny):
    """The final norm's output equals Mamba2Model's last_hidden_state."""
    hf, _, _, path = tiny
    tensors, cfg = load_file(str(path / "model.safetensors")), hf.config.to_dict()
    spec = spec_from_hf_config(cfg)
    spec["outputs"] = ["lm.backbone.norm_f"]
    c = compiler.compile(spec).raise_for_errors()
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, tensors, hf_key_map("mamba2"), strict=False)
    with torch.no_grad():
        want = hf.backbone(input_ids=IDS).last_hidden_state
        got = model(input_ids=IDS)["lm.backbone.norm_f"]
    assert (got - want).abs().max().item() < 1e-4


def test_mlx_matches_transformers(tiny):
    import runtime_mlx  # first: the OpenBLAS preload precedes `import mlx`
    import mlx.core as mx
    from runtime_mlx import weights as mlx_weights
    hf, _, c, path = tiny
    model = runtime_mlx.build(c, init=False)
    tensors = {k: mx.array(v.numpy()) for k, v in load_file(str(path / "model.safetensors")).items()}
    mlx_weights.load_state_dict_mapped(model, tensors, hf_key_map("mamba2"))
    with torch.no_grad():
        want = hf(input_ids=IDS).logits.numpy()
    got = np.array(model(input_ids=mx.array(IDS.numpy()))["lm.lm_head"])
    diff = float(np.abs(got - want).max())
    print(f"MLX: max |logits diff| = {diff:.2e}")
    assert diff < 1e-4


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunk_size_does_not_change_the_result(chunk, tiny):
    hf, model, c, _ = tiny
    cfg = hf.config.to_dict()
    cfg["chunk_size"] = chunk
    other = rt.build(compiled_from(cfg), init=False)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        a, b = model(input_ids=IDS)["lm.lm_head"], other(input_ids=IDS)["lm.lm_head"]
    assert (a - b).abs().max().item() < 1e-4


# --- accounting ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,chunk", [(13, 5), (13, 256), (1, 5), (10, 5)])
def test_flop_rule_matches_torch_counter(T, chunk):
    """Prefill FLOPs of one block == torch's FlopCounterMode over its forward (in_proj, convolution, the scan's
    products, out_proj), for sequences of whole and partial chunks."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = {**TINY, "chunk_size": chunk, "num_hidden_layers": 1, "model_type": "mamba2"}
    c = compiled_from(cfg, batch=2, context=T)
    node = next(n for n in c.report["nodes"] if n["op"] == "Mamba2Block")
    block = rt.build(c, seed=0).node(node["name"])
    with FlopCounterMode(display=False) as fc:
        block(torch.randn(2, T, TINY["hidden_size"]))
    assert fc.get_total_flops() == node["flops_prefill"]


# --- import ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("time_step_limit", [0.0, 100.0]), ("hidden_act", "gelu")])
def test_importer_refuses_what_it_cannot_run(key, value):
    cfg = {**TINY, "model_type": "mamba2", key: value}
    with pytest.raises(ValueError, match=key):
        spec_from_hf_config(cfg)


def test_bad_head_layout_is_a_located_error():
    cfg = {**TINY, "model_type": "mamba2", "num_heads": 6}
    c = compiler.compile(spec_from_hf_config(cfg))
    assert not c.ok
    (err,) = c.errors
    assert "num_heads" in err.render() and "inner width 64" in err.render()


def test_omnic_import_hf_reads_the_config_transformers_wrote(tmp_path):
    """`omnic import-hf` on the config.json of save_pretrained (time_step_limit's infinity as transformers 5.x
    writes it) gives a spec that compiles to the model's count."""
    from click.testing import CliRunner

    from compiler.cli import cli
    hf = hf_mamba2(tie=True)
    hf.config.save_pretrained(tmp_path)
    out = tmp_path / "spec.json"
    r = CliRunner().invoke(cli, ["import-hf", str(tmp_path / "config.json"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    spec = json.loads(out.read_text(encoding="utf-8"))
    assert [l["type"] for l in spec["layers"]] == ["Mamba2LM"]
    assert compiler.compile(str(out)).report["params"]["total"] == sum(p.numel() for p in hf.parameters())


# --- decoding ------------------------------------------------------------------------------------------------------
PROMPT, NEW = 6, 14


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, omnic torch model, compiled spec) of the untied tiny model."""
    return omnic_torch(tmp_path_factory.mktemp("mamba2_decode"))


def test_greedy_equals_transformers(pair):
    hf, model, _ = pair
    ids = torch.randint(3, 96, (2, PROMPT), generator=torch.Generator().manual_seed(2))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, max_new_tokens=NEW,
                       eos_token_id=None, pad_token_id=0)
    got = generate(model, ids, NEW)
    assert got.tolist() == want.tolist()
    assert len(set(got[0, PROMPT:].tolist())) > 2, "degenerate test: the model repeats one token"


@pytest.mark.parametrize("parts", [(1,) * 11, (3, 1, 5, 2), (6, 5)])
def test_cached_steps_equal_the_full_forward(pair, parts):
    """Feeding the sequence token by token, or in chunks (which cross the scan's 5-token chunks), through the
    state gives the full forward's logits."""
    _, model, _ = pair
    ids = torch.randint(0, 96, (2, sum(parts)), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(input_ids=ids)["lm.lm_head"]
    s = DecodeSession(model)
    out, start = [], 0
    for n in parts:
        out.append(s.step(ids[:, start:start + n]))
        start += n
    assert s.seen == sum(parts)
    assert (torch.cat(out, dim=1) - full).abs().max().item() < 1e-4


def test_cache_bytes_equal_the_reports_decode_state(pair):
    """After a prefill of 5 and 4 decoded tokens at batch 2, the caches hold exactly the compiler's decode state
    (fp32): per layer (B, H, P, N) + (B, I + 2 G N, K - 1), independent of the length."""
    hf, model, _ = pair
    s = DecodeSession(model, reserve=9)
    s.step(torch.zeros(2, 5, dtype=torch.long))
    for _ in range(4):
        s.step(torch.zeros(2, 1, dtype=torch.long))
    held = sum(t.untyped_storage().nbytes() for c in s.caches.values() for t in c.tensors())
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=2, context=9).report
    assert held == report["memory"]["decode_state"]["fp32"]
    cfg = hf.config
    per_layer = 2 * (cfg.num_heads * cfg.head_dim * cfg.state_size
                     + (cfg.expand * cfg.hidden_size + 2 * cfg.n_groups * cfg.state_size) * (cfg.conv_kernel - 1))
    assert held == 4 * per_layer * cfg.num_hidden_layers


def test_decode_flops_match_torch_counter(pair):
    """The report's FLOPs per decoded token == torch's FlopCounterMode over one cached step (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode
    hf, model, _ = pair
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=1, context=8).report
    s = DecodeSession(model, pack=False)
    s.step(torch.zeros(1, 7, dtype=torch.long))
    with FlopCounterMode(display=False) as fc:
        s.step(torch.zeros(1, 1, dtype=torch.long))
    assert fc.get_total_flops() == report["flops"]["decode_per_token"]


def test_mlx_generate_equals_torch_and_holds_the_declared_state(pair):
    import runtime_mlx  # first: the OpenBLAS preload precedes `import mlx`
    import mlx.core as mx
    from runtime_mlx import generate as mlx_generate
    from runtime_mlx import weights as mlx_weights
    hf, model, c = pair
    m = runtime_mlx.build(c, init=False)
    mlx_weights.load_state_dict_mapped(m, {k: mx.array(v.numpy()) for k, v in hf.state_dict().items()},
                                       hf_key_map("mamba2"))
    ids = torch.randint(3, 96, (2, PROMPT), generator=torch.Generator().manual_seed(2))
    ours = np.array(mlx_generate.generate(m, mx.array(ids.numpy()), NEW))
    assert ours.tolist() == generate(model, ids, NEW).tolist()
    s = mlx_generate.DecodeSession(m)
    mx.eval(s.step(mx.array(ids.numpy())))
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=2, context=PROMPT).report
    assert s.cache_nbytes() == report["memory"]["decode_state"]["fp32"]


# --- export ----------------------------------------------------------------------------------------------------------
def test_onnx_export_runs_at_other_sizes(tmp_path):
    """`omnic build --target onnx`'s emitter exports the LM with dynamic batch and length (the scan traced as one
    chunk); onnxruntime at a batch and length other than the export's matches the torch runtime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from compiler.emit import onnx as emit_onnx
    from tests.op_examples import OP_EXAMPLES
    c = compiler.compile(OP_EXAMPLES["Mamba2LM"][0]).raise_for_errors()
    emit_onnx.write(c, str(tmp_path))
    model = rt.build(c, seed=0).eval()
    inputs = emit_onnx.example_inputs(c.graph, {"B": 3, "T": 9}, 7)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(model.output_names, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        want = model(**inputs)[model.output_names[0]].numpy()
    assert got.shape == (3, 9, 16) and np.abs(got - want).max() < 1e-4
