"""`omnic build --target onnx-decode`: tiny llama, gemma3 (sliding layers, q/k norm) and qwen2 (biases, a sliding
layer) decoders exported with past_key_values in and present out; a left-padded batch decoded greedily in
onnxruntime gives the tokens of omnic-torch (each row alone, unpadded) and of transformers' generate (the padded
batch, same weights, read from a checkpoint through --weights-from's path). VLMs and LFM2 are refused with a clear
error."""
from __future__ import annotations

import json
import os

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

import compiler  # noqa: E402
import runtime_torch as rt  # noqa: E402
from compiler.cli import cli  # noqa: E402
from compiler.emit import onnx_decode  # noqa: E402
from compiler.emit.build import BuildError  # noqa: E402
from compiler.importers import spec_from_hf_config  # noqa: E402
from runtime_torch.generate import generate  # noqa: E402
from tests.hf_models import DENSE, TINY, hf_model, omnic_from_hf  # noqa: E402
from tests.shrink import SHRINK  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW = 10
PROMPTS = [[5, 17, 99, 42], [7, 3, 88, 21, 64, 9, 31]]          # 4 and 7 tokens: the first row padded by 3


def qwen2(seed: int = 0):
    """tests/hf_models.py's DENSE qwen2 (biases, one sliding layer), perturbed as hf_model perturbs."""
    M, C, kw = DENSE["qwen2"]
    torch.manual_seed(seed)
    m = M(C(**kw, attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p)) if p.dim() > 1 else p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module", params=["llama", "gemma3", "qwen2"])
def exported(request, tmp_path_factory):
    family = request.param
    hf = qwen2() if family == "qwen2" else hf_model(family)
    tmp = tmp_path_factory.mktemp(family)
    model = omnic_from_hf(hf, tmp)
    c = compiler.compile(spec_from_hf_config(hf.config.to_dict()))
    ckpt = tmp / "omnic.safetensors"
    rt.save_weights(model, ckpt)
    out = tmp / "onnx"
    onnx_decode.write(c, str(out), weights_from=str(ckpt))      # the weights of the checkpoint, not seeded ones
    return family, hf, model, str(out)


def padded(vocab_pad: int = 0):
    T = max(len(p) for p in PROMPTS)
    ids = torch.tensor([[vocab_pad] * (T - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    return ids, mask


def test_layout(exported):
    family, hf, _, out = exported
    info = json.loads(open(os.path.join(out, "onnx.json")).read())
    n = hf.config.num_hidden_layers
    kv, hs = hf.config.num_key_value_heads, getattr(hf.config, "head_dim", None) or (
        hf.config.hidden_size // hf.config.num_attention_heads)
    assert info["inputs"]["input_ids"] == ["batch", "seq"]
    assert info["inputs"]["attention_mask"] == ["batch", "total_seq"]
    assert info["inputs"]["position_ids"] == ["batch", "seq"]
    for i in range(n):
        for k in ("key", "value"):
            assert info["inputs"][f"past_key_values.{i}.{k}"] == ["batch", kv, "past_seq", hs]
            assert info["outputs"][f"present.{i}.{k}"] == ["batch", kv, "total_seq", hs]
    assert info["outputs"]["logits"] == ["batch", "seq", hf.config.vocab_size]
    assert len(info["inputs"]) == 3 + 2 * n and len(info["outputs"]) == 1 + 2 * n
    assert info["conversion"] == "direct"
    assert max(info["check"]["max_abs_difference"].values()) <= 1e-4


def test_greedy_tokens_equal_torch_and_transformers(exported):
    family, hf, model, out = exported
    ids, mask = padded()
    kv = [(hf.config.num_key_value_heads, getattr(hf.config, "head_dim", None) or
           hf.config.hidden_size // hf.config.num_attention_heads)] * hf.config.num_hidden_layers
    got, _ = onnx_decode.greedy(onnx_decode.ort_runner(os.path.join(out, "model.onnx")), (ids, mask), NEW, kv)
    for row, prompt in enumerate(PROMPTS):                          # omnic-torch, each row alone, no padding
        alone = generate(model, torch.tensor([prompt]), NEW, pack=False)[0, len(prompt):]
        assert got[row].tolist() == alone.tolist(), (family, row)
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=NEW,
                           eos_token_id=None, pad_token_id=0)[:, ids.shape[1]:]
    assert got.tolist() == want.tolist(), family
    assert all(len(set(r)) > 2 for r in got.tolist()), "degenerate test: a row repeats one token"


def test_one_token_steps_match_one_longer_call(exported):
    """Three tokens after a prompt, fed one by one through the presents, give the logits of one call on all."""
    import numpy as np
    _, hf, _, out = exported
    run = onnx_decode.ort_runner(os.path.join(out, "model.onnx"))
    L = hf.config.num_hidden_layers
    kv, hs = hf.config.num_key_value_heads, getattr(hf.config, "head_dim", None) or (
        hf.config.hidden_size // hf.config.num_attention_heads)
    ids, mask = (t.numpy().astype(np.int64) for t in padded())
    empty = {f"past_key_values.{i}.{k}": np.zeros((2, kv, 0, hs), np.float32) for i in range(L)
             for k in ("key", "value")}
    pos = (np.cumsum(mask, -1) - 1).clip(min=0)
    whole = run({"input_ids": ids, "attention_mask": mask, "position_ids": pos, **empty})[0]
    T = ids.shape[1]
    first = run({"input_ids": ids[:, :T - 3], "attention_mask": mask[:, :T - 3], "position_ids": pos[:, :T - 3],
                 **empty})
    past, logits = first[1:], [first[0]]
    for t in range(T - 3, T):
        o = run({"input_ids": ids[:, t:t + 1], "attention_mask": mask[:, :t + 1], "position_ids": pos[:, t:t + 1],
                 **{f"past_key_values.{i}.{k}": past[2 * i + j] for i in range(L)
                    for j, k in enumerate(("key", "value"))}})
        past, logits = o[1:], logits + [o[0]]
    step = np.concatenate(logits, axis=1)
    real = mask.astype(bool)                                        # padding positions' logits are never read
    assert np.allclose(step[real], whole[real], atol=1e-4, rtol=1e-4)


def test_a_vlm_is_refused(tmp_path):
    path = "specs/nanovlm/original_small.json"
    c = compiler.compile(os.path.join(ROOT, path), overrides=SHRINK[path])
    with pytest.raises(BuildError, match="text-only decoder; this model also takes image"):
        onnx_decode.write(c, str(tmp_path))


def test_lfm2_is_refused_through_the_cli(tmp_path):
    spec = tmp_path / "lfm2.json"
    M, C, kw, _ = TINY["lfm2"]
    spec.write_text(json.dumps(spec_from_hf_config(C(**kw).to_dict())))
    r = CliRunner().invoke(cli, ["build", str(spec), "--target", "onnx-decode", "-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output                            # a UserError: message, no traceback
    assert "short convolution (LFM2)" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_onnxruntime_genai_decodes_the_export_of_a_save_pretrained_folder(family, tmp_path):
    """transformers' save_pretrained folder -> `omnic build --target onnx-decode --weights-from` -> genai_config.json
    and model.onnx loaded by onnxruntime-genai's own Model and Generator: greedy tokens equal transformers' generate
    (stopping at the checkpoint's eos, which genai reads from the config omnic wrote)."""
    og = pytest.importorskip("onnxruntime_genai")
    import numpy as np
    hf = hf_model(family)
    for cfg in (hf.config, hf.generation_config):             # generation_config.json is read first, as generate does
        cfg.eos_token_id, cfg.bos_token_id = 2, 1
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_from_hf_config(hf.config.to_dict())))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["build", str(spec), "--target", "onnx-decode", "-o", str(out),
                                 "--weights-from", str(folder)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "genai_config.json").read_text())
    assert cfg["model"]["eos_token_id"] == 2 and cfg["model"]["bos_token_id"] == 1
    assert cfg["model"]["decoder"]["num_hidden_layers"] == hf.config.num_hidden_layers
    assert json.loads((out / "onnx.json").read_text())["genai_config"] == "genai_config.json"
    model = og.Model(str(out))
    for prompt in PROMPTS:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + NEW, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(np.array([prompt], dtype=np.int32))
        got = []
        while not gen.is_done():
            gen.generate_next_token()
            got.append(int(gen.get_next_tokens()[0]))
        with torch.no_grad():
            want = hf.generate(torch.tensor([prompt]), do_sample=False, num_beams=1, max_new_tokens=NEW,
                               eos_token_id=2, pad_token_id=0)[0, len(prompt):].tolist()
        assert got == want, (family, prompt)


def test_genai_config_is_not_written_for_layers_of_different_head_counts():
    layout = {"kv_shapes": [(2, 16), (4, 16)], "layers": ["a", "b"], "num_layers": 2, "vocab_size": 8}
    why = onnx_decode.genai_config(None, layout)
    assert isinstance(why, str) and "one key/value head count and head size" in why and "(2, 16), (4, 16)" in why


def test_token_ids_are_read_beside_the_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 7, "pad_token_id": None,
                                                      "text_config": {"bos_token_id": 3, "eos_token_id": 9}}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 6]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert onnx_decode.token_ids(tmp_path / "model.safetensors") == {"eos_token_id": [5, 6], "bos_token_id": 3}
    assert onnx_decode.token_ids(tmp_path) == {"eos_token_id": [5, 6], "bos_token_id": 3}
    assert onnx_decode.token_ids(None) == {}
