"""The seed systems' own checkpoints, in their own code's naming, load strictly and give their code's outputs.

tests/data/ holds small checkpoints written by the seed systems' public code on tiny random weights (the code ran
outside this repository; each folder's config.json is that code's config), with inputs and the outputs their code
computed (io.safetensors):
  nanovlm_upstream   huggingface/nanoVLM 4e0c096 `models/` (ViT, LanguageModel, ModalityProjector under the
                     names VisionLanguageModel gives them): lm_vocab_size = base + 66 (not rounded), a persistent
                     rotary `inv_freq`, lm_max_position_embeddings 24
  nanovlm_fork_dinov3_gemma   amazingvince/nanoVLM 74e50ab `models/` configured as get_dinov3_gemma_config() after
                     from_pretrained (DINOv3 ViT without positions, a Llama-style decoder with its own head_dim)
  fvlm               spsanps/nanoSmol bb7ea3e `fVLM/model.py` + `encoder.py` (FoveatedVLM, query_dim 8) over tiny
                     DINOv2 / Llama backbones, run with transformers 4.56 as the release was (its DINOv2 names:
                     attention.attention.query, ...); the text logits of forward_coarse_fine
"""
from __future__ import annotations

import os

import numpy as np
import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch
from safetensors.torch import load_file

import compiler
import runtime_torch as rt
from compiler.importers.folder import key_map_of_folder, spec_of_folder

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ATOL = 1e-4


def test_nanovlm_upstream_checkpoint():
    folder = os.path.join(DATA, "nanovlm_upstream")
    spec = spec_of_folder(folder)
    assert spec["context"] == 24
    c = compiler.compile(spec)
    assert c.ok, [d.render() for d in c.errors]
    (emb,) = [n for n in c.graph.nodes() if n.name == "decoder.token_embedding"]
    assert emb.params.num_embeddings == 166                     # lm_vocab_size: 100 + 66, not rounded to 256
    model = rt.build(c, device="meta", init=False)
    rt.load_checkpoint(model, folder, key_map_of_folder(folder))  # strict; inv_freq dropped
    io = load_file(os.path.join(folder, "io.safetensors"))
    mm = runtime_mlx.build(c, init=False)
    runtime_mlx.load_checkpoint(mm, folder, key_map_of_folder(folder))
    # 24 tokens: within lm_max_position_embeddings; 32: past it, every frequency divided by 32 / 24
    for T, want in ((24, io["logits_24"]), (32, io["logits"])):
        ids = io["input_ids"][:, :T]
        with torch.no_grad():
            got = model.eval()(image=io["image"], input_ids=ids)["decoder.head"]
        assert (got - want).abs().max().item() < ATOL
        got = mm(image=mx.array(io["image"].numpy()), input_ids=mx.array(ids.numpy()))["decoder.head"]
        assert np.abs(np.asarray(got) - want.numpy()).max() < ATOL


def test_nanovlm_fork_dinov3_gemma_checkpoint():
    """The fork's DINOv3 + "Gemma" as its code computes it: CLS + registers and no position information in the
    ViT, a Llama-style decoder with its own head_dim, the fork's names; vocabulary base + 17 rounded to 128."""
    folder = os.path.join(DATA, "nanovlm_fork_dinov3_gemma")
    c = compiler.compile(spec_of_folder(folder))
    assert c.ok, [d.render() for d in c.errors]
    model = rt.build(c, device="meta", init=False)
    rt.load_checkpoint(model, folder, key_map_of_folder(folder))
    io = load_file(os.path.join(folder, "io.safetensors"))
    with torch.no_grad():
        got = model.eval()(image=io["image"], input_ids=io["input_ids"])["decoder.head"]
    assert (got - io["logits"]).abs().max().item() < ATOL
    mm = runtime_mlx.build(c, init=False)
    runtime_mlx.load_checkpoint(mm, folder, key_map_of_folder(folder))
    got = mm(image=mx.array(io["image"].numpy()), input_ids=mx.array(io["input_ids"].numpy()))["decoder.head"]
    assert np.abs(np.asarray(got) - io["logits"].numpy()).max() < ATOL


def test_fvlm_checkpoint_of_its_own_code():
    from compiler.importers.fvlm import fvlm_key_map
    from tests.tiny_specs import fvlm_tiny
    folder = os.path.join(DATA, "fvlm")
    c = fvlm_tiny()
    model = rt.build(c, device="meta", init=False)
    rt.load_checkpoint(model, folder, fvlm_key_map())          # strict; the tied llm.lm_head dropped
    io = load_file(os.path.join(folder, "io.safetensors"))
    S = io["input_ids"].shape[1]
    with torch.no_grad():
        got = model.eval()(frames=io["frames"], input_ids=io["input_ids"])["fvlm"][:, -S:]   # text positions
    assert (got - io["logits"]).abs().max().item() < ATOL
    mm = runtime_mlx.build(c, init=False)
    runtime_mlx.load_checkpoint(mm, folder, fvlm_key_map())
    got = mm(frames=mx.array(io["frames"].numpy()), input_ids=mx.array(io["input_ids"].numpy()))["fvlm"][:, -S:]
    assert np.abs(np.asarray(got) - io["logits"].numpy()).max() < ATOL


def test_cli_route_from_a_nanovlm_folder(tmp_path):
    """omnic import-hf and build --weights-from on the fork's folder: its config picks the nanoVLM importer and key
    map; the written file loads in omnic's layout and gives the fork's logits."""
    from click.testing import CliRunner

    from compiler.cli import cli
    folder = os.path.join(DATA, "nanovlm_fork_dinov3_gemma")
    spec, out = tmp_path / "fork.json", tmp_path / "out"
    run = CliRunner().invoke
    r = run(cli, ["import-hf", folder, "-o", str(spec), "--name", "fork"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["build", str(spec), "--target", "torch", "-o", str(out), "--weights-from", folder])
    assert r.exit_code == 0, r.output
    model = rt.build(compiler.compile(str(spec)), device="meta", init=False)
    rt.load_weights(model, out / "model.safetensors")
    io = load_file(os.path.join(folder, "io.safetensors"))
    with torch.no_grad():
        got = model.eval()(image=io["image"], input_ids=io["input_ids"])["decoder.head"]
    assert (got - io["logits"]).abs().max().item() < ATOL
