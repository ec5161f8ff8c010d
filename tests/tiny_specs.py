"""Tiny specs several test modules share, and the helpers that write and check them through the CLI. A helper
module, not a test module: tests import it, never each other (tests/test_imports.py).

  CLI_TINY     an ids -> embedding -> 3 Linear -> norm -> head spec with a budget and an expectation (`omnic check`)
  LM, VLM      a tiny causal LM and a tiny VLM (PatchEmbed -> MergeImageTokens -> blocks) for `omnic run` / `generate`
  fvlm_tiny()  specs/fvlm_135m.json shrunk to 28 px frames, compiled
  RUNTIMES     the runtime parametrisation ("mlx" skipped where MLX is not installed)
  write, run   a spec written to a file; `omnic ...` run in this process
"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
from click.testing import CliRunner

import compiler
from compiler.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLI_PARAMS = 800 + 3 * 72 + 8 + 800   # embedding, 3 x (8x8 + 8), norm, head (hand count)
CLI_TINY = {
    "name": "tiny",
    "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}],
    "context": 16,
    "layers": [
        {"id": "embed", "type": "Embedding", "params": {"num_embeddings": 100, "embedding_dim": 8}},
        {"id": "mlp", "type": "Linear", "params": {"in_features": 8, "out_features": 8}, "repeat": 3},
        {"id": "norm", "type": "RMSNorm", "params": {}},
        {"id": "head", "type": "Linear", "params": {"out_features": 100, "bias": False}},
    ],
    "budget": {"vram": "1GiB"},
    "expect": {"params.total": {"value": "1.824K", "tolerance": 0.001}},
}


def write(tmp_path, doc, name="spec.json"):
    """A spec (a dict, or text as it is) written to tmp_path/name; its path."""
    p = tmp_path / name
    p.write_text(json.dumps(doc, indent=2) if isinstance(doc, dict) else doc)
    return str(p)


def run(*args):
    """`omnic ARGS...` in this process (exceptions propagate)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


RUNTIMES = ["torch", pytest.param("mlx", marks=pytest.mark.skipif(
    importlib.util.find_spec("mlx") is None, reason="needs mlx"))]
VOCAB = 64
LM = {
    "name": "tiny-lm", "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}], "context": 32,
    "layers": [
        {"id": "embed", "type": "Embedding", "params": {"num_embeddings": VOCAB, "embedding_dim": 32}},
        {"id": "blocks", "type": "TransformerBlock",
         "params": {"num_heads": 4, "ff_dim": 64, "mlp": "swiglu", "norm": "rmsnorm", "causal": True, "rope": "1d"},
         "repeat": 2},
        {"id": "norm", "type": "RMSNorm", "params": {}},
        {"id": "head", "type": "Linear", "params": {"out_features": VOCAB, "bias": False, "tie": "embed"}},
    ],
}
VLM = {
    "name": "tiny-vlm", "inputs": [{"name": "image", "kind": "image", "shape": ["B", 3, 32, 32]},
                                   {"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
    "context": 32,
    "layers": [
        {"id": "patch", "type": "PatchEmbed", "params": {"patch_size": 16, "embed_dim": 16, "positions": "learned"},
         "inputs": ["image"]},
        {"id": "proj", "type": "Linear", "params": {"out_features": 32}},
        {"id": "embed", "type": "Embedding", "params": {"num_embeddings": VOCAB, "embedding_dim": 32},
         "inputs": ["input_ids"]},
        {"id": "merge", "type": "MergeImageTokens", "params": {"image_token_id": 5},
         "inputs": ["embed", "proj", "input_ids"]},
        {"id": "blocks", "type": "TransformerBlock",
         "params": {"num_heads": 4, "ff_dim": 64, "norm": "rmsnorm", "causal": True, "rope": "1d"}, "repeat": 2},
        {"id": "head", "type": "Linear", "params": {"out_features": VOCAB, "bias": False}},
    ],
}


def fvlm_tiny():
    """specs/fvlm_135m.json at 28 px frames (2x2 patches, a 3x3 table), DINO and LLM 16 wide x 2, vocabulary 64."""
    c = compiler.compile(os.path.join(ROOT, "specs/fvlm_135m.json"), overrides={
        "inputs[0].shape": ["B", "F", 3, 28, 28],
        "layers[0].params.dino": {"hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32, "patch_size": 14,
                                  "pos_grid": 3},
        "layers[0].params.llm": {"vocab_size": 64, "hidden": 16, "layers": 2, "heads": 2, "kv_heads": 1,
                                 "ff_dim": 32},
        "layers[0].params.query_dim": 8})
    assert c.ok, c.errors
    return c
