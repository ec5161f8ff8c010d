"""`omnic run` / `omnic generate` in both runtimes on tiny specs, a build directory, a local tokenizer written by
transformers; run-time misuse errors (item 12) at model entry; `omnic doctor` and `-V`.

References: greedy tokens equal the argmax of the full forward recomputed at every step (no cache), and torch's equal
MLX's. The measured peak memory of these tiny models is only checked to be of the predicted size (within 2x: fixed
allocations weigh more than in real models, whose figures bench/bench_mlx.py compares)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from compiler import compile
from compiler.cli import cli
from tests.tiny_specs import LM, RUNTIMES, VLM, VOCAB

def spec(tmp_path, doc, name="spec.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc, indent=1))
    return str(p)


def omnic(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_prints_outputs_speed_and_memory_beside_the_prediction(tmp_path, runtime):
    r = omnic("run", spec(tmp_path, VLM), "--runtime", runtime, "--tokens", "6")
    assert r.exit_code == 0, r.output
    assert "input_ids (1, 10) int64, 4 placeholders of id 5" in r.output     # 2x2 patches of 32x32 / 16
    assert "head  (1, 10, 64)" in r.output and "tokens-per-sec" in r.output
    j = json.loads(omnic("run", spec(tmp_path, VLM), "--runtime", runtime, "--json").stdout)
    assert j["outputs"]["head"]["shape"] == [1, 20, VOCAB]
    assert 0.5 < j["peak"] / j["predicted"] < 2, j


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_generate_greedy_equals_the_uncached_argmax(tmp_path, runtime):
    path = spec(tmp_path, LM)
    r = omnic("generate", path, "--runtime", runtime, "--ids", "3,1,4,1,5", "-n", "6", "--json", "--seed", "2")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert 0.5 < got["peak"] / got["predicted"] < 2, got
    import torch
    model = compile(path).to_torch(seed=2)
    ids = [3, 1, 4, 1, 5]
    with torch.no_grad():
        for _ in range(6):                          # the whole sequence again at every step: no cache involved
            ids.append(int(model(ids=torch.tensor([ids]))["head"][0, -1].argmax()))
    assert got["tokens"] == [ids[5:]]


def test_generate_with_a_prompt_through_a_local_tokenizer_and_a_build_dir(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["<eos>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 2)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp_path / "tok")
    out = tmp_path / "build"
    assert omnic("build", spec(tmp_path, LM), "--target", "torch", "-o", out, "--weights", "--seed", "3").exit_code == 0
    r = omnic("generate", out, "--tokenizer", tmp_path / "tok", "--prompt", "w1 w2 w3", "-n", "4", "--eos", "-1")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("tiny-lm: torch, float32, weights ") and "model.safetensors" in lines[0]
    assert all(w.startswith("w") for w in lines[1].split()) and len(lines[1].split()) == 4   # decoded text
    assert lines[3].startswith("Prompt: 3 tokens") and lines[4].startswith("Generation: 4 tokens")
    assert lines[5].startswith("Peak memory: ")
    # the same weights in MLX give the same text (the build's file serves both runtimes)
    r2 = omnic("generate", out, "--runtime", "mlx", "--tokenizer", tmp_path / "tok", "--prompt", "w1 w2 w3", "-n",
               "4", "--eos", "-1")
    assert r2.exit_code == 0 and r2.output.splitlines()[1] == lines[1]


def test_run_usage_errors_are_one_line(tmp_path):
    path = spec(tmp_path, LM)
    r = omnic("generate", path, "--prompt", "hi")
    assert r.exit_code == 2 and "--prompt needs --tokenizer" in r.output and "Traceback" not in r.output
    r = omnic("run", path, "--weights", tmp_path / "nope.safetensors")
    assert r.exit_code == 2 and "weights file not found" in r.output
    r = omnic("run", spec(tmp_path, VLM), "--image", tmp_path / "nope.png")
    assert r.exit_code == 2 and "image file not found" in r.output
    r = omnic("generate", path, "--ids", "1,2,999")
    assert r.exit_code == 2 and "outside the model's vocabulary of 64" in r.output


def test_image_from_a_file(tmp_path):
    img = np.linspace(0, 1, 3 * 32 * 32, dtype=np.float32).reshape(3, 32, 32)
    np.save(tmp_path / "img.npy", img)
    a = json.loads(omnic("run", spec(tmp_path, VLM), "--image", f"image={tmp_path / 'img.npy'}", "--json").stdout)
    b = json.loads(omnic("run", spec(tmp_path, VLM), "--json").stdout)
    assert a["outputs"]["head"]["mean"] != b["outputs"]["head"]["mean"]     # the file, not random pixels, was used


# --- 12. run-time misuse ------------------------------------------------------------------------------------------------
def _vlm_inputs(rt, h=32, ids=(5, 5, 5, 5, 9, 9), idtype="int"):
    x = np.zeros((1, 3, h, 32), np.float32)
    i = np.array([ids], np.int64 if idtype == "int" else np.float32)
    if rt == "torch":
        import torch
        return {"image": torch.from_numpy(x), "input_ids": torch.from_numpy(i)}
    import mlx.core as mx
    return {"image": mx.array(x), "input_ids": mx.array(i)}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kw, message", [
    ({"h": 48}, "input 'image' has shape (1, 3, 48, 32), but the spec expects (B, 3, 32, 32): height 32, not 48"),
    ({"ids": (9, 9, 9)}, "input 'input_ids' holds 0 placeholder tokens of id 5; merge needs 4 per example"),
    ({"ids": (5, 5, 5, 5, 5)}, "holds 5 placeholder tokens of id 5"),
    ({"idtype": "float"}, "input 'input_ids': token ids must be integers, got dtype"),
])
def test_misuse_names_the_expected_value(runtime, kw, message):
    c = compile(VLM)
    model = c.to_torch() if runtime == "torch" else c.to_mlx()
    model(**_vlm_inputs(runtime))                   # the right inputs run
    with pytest.raises(ValueError) as e:
        model(**_vlm_inputs(runtime, **kw))
    assert message in str(e.value)


def test_inconsistent_batch_is_named():
    import torch
    model = compile(VLM).to_torch()
    with pytest.raises(ValueError, match=r"input 'input_ids': its batch B is 2, but 'image' has B = 1"):
        model(image=torch.zeros(1, 3, 32, 32), input_ids=torch.tensor([[5, 5, 5, 5]] * 2))


# --- doctor, -V ---------------------------------------------------------------------------------------------------------
def test_doctor_and_version():
    from compiler import __version__
    assert omnic("-V").output.strip() == f"omnic, version {__version__}"
    r = omnic("doctor")
    assert r.exit_code == 0
    lines = {line.split()[1]: line for line in r.output.splitlines()}
    assert {"omnic", "torch", "mlx", "onnx", "transformers", "graphviz"} <= lines.keys()
    import sys
    if sys.platform == "linux" and "mlx" in sys.modules:
        import runtime_mlx
        assert ("BLAS: OpenBLAS" if runtime_mlx.BLAS["loaded"] else "reference BLAS") in lines["mlx"]


# --- 16. progress in logs ---------------------------------------------------------------------------------------
def test_slow_work_reports_progress_without_a_terminal(monkeypatch, capsys):
    """Off a terminal, quick work is silent and slow work prints plain lines (the clock is made to run fast)."""
    from runtime_common import progress
    items = [str(i) for i in range(20)]
    assert list(progress.track(items, "initialising weights")) == items
    assert capsys.readouterr().err == ""                         # quick: silent
    clock = iter(range(0, 10_000, 3))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    assert list(progress.track(items, "initialising weights", [progress.LOG_MIN_ELEMENTS] * 20)) == items
    err = capsys.readouterr().err.splitlines()
    assert all(re.fullmatch(r"initialising weights: \d+% \(\d+ s\)", line) for line in err[:-1]), err
    assert len(err) >= 5 and err[-2].startswith("initialising weights: 100% (")
    assert err[-1].startswith("initialising weights: done (")
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.01)
    with progress.steps("building") as step:
        step("tracing (torch.export)")
        __import__("time").sleep(0.1)
    err = capsys.readouterr().err
    assert "tracing (torch.export): still working (" in err and err.splitlines()[-1].startswith("building: done (")


# --- 11. the built model says what it needs -----------------------------------------------------------------------
@pytest.mark.parametrize("target", ["torch", "mlx"])
def test_build_states_each_input(tmp_path, target):
    out = tmp_path / "b"
    r = omnic("build", spec(tmp_path, VLM), "--target", target, "-o", out)
    assert r.exit_code == 0, r.output
    tail = r.output.splitlines()[-3:]
    assert tail == ["inputs (model.py's INPUTS):", "  image: image (B, 3, 32, 32) float",
                    "  input_ids: ids (B, T) int, ids < 64; each example holds 4 tokens of id 5 (image placeholders "
                    "for merge)"]
    import ast
    tree = ast.parse((out / "model.py").read_text())
    inputs = next(ast.literal_eval(s.value) for s in tree.body if isinstance(s, ast.Assign)
                  and s.targets[0].id == "INPUTS")
    assert inputs == {"image": "image (B, 3, 32, 32) float",
                      "input_ids": "ids (B, T) int, ids < 64; each example holds 4 tokens of id 5 (image "
                                   "placeholders for merge)"}


def test_a_fixed_frame_count_is_named():
    """A video input compiled for 4 frames refuses 3, naming the frame count (checked before any op runs)."""
    import numpy as np
    from runtime_common.input_spec import InputSpec, check
    from compiler.dims import Dim
    spec_ = InputSpec("frames", "video", tuple(Dim.of(d) for d in ["B", 4, 3, 16, 16]), "float")
    check([spec_], {"frames": np.zeros((2, 4, 3, 16, 16), np.float32)})
    with pytest.raises(ValueError, match=r"input 'frames' has shape \(2, 3, 3, 16, 16\), but the spec expects "
                                         r"\(B, 4, 3, 16, 16\): frame count 4, not 3"):
        check([spec_], {"frames": np.zeros((2, 3, 3, 16, 16), np.float32)})


def test_run_of_attention_too_large_for_memory_is_one_line(tmp_path):
    """MLX's attention refuses 600 GiB of scores (patch 1 over 224 x 224: 50,177 tokens, batch 64) before MLX would
    end the process on the failed allocation: one line, exit 2."""
    pytest.importorskip("runtime_mlx")
    doc = {"name": "long", "inputs": [{"name": "x", "kind": "image", "shape": ["B", 3, 224, 224]}], "layers": [
        {"id": "patches", "type": "PatchEmbed", "params": {"embed_dim": 8, "patch_size": 1, "cls_token": True}},
        {"id": "block", "type": "TransformerBlock", "params": {"num_heads": 1, "ff_dim": 8, "causal": True}},
        {"id": "head", "type": "ClassificationHead", "params": {"num_classes": 3}}]}
    r = omnic("run", spec(tmp_path, doc), "--runtime", "mlx", "--batch", "64")
    assert r.exit_code == 2, r.output
    assert "needs 600." in r.output and "GiB for its scores" in r.output and "Traceback" not in r.output
