"""Seeded weights drawn straight into a memory-mapped safetensors file (runtime_torch/seeded_file.py) are the file
`save_weights` writes for the model built with that seed, byte for byte: for every op example and the tiny examples,
in float32 and bfloat16; the header layout is safetensors' own (checked against its serializer, including a
non-ASCII name, a scalar and an empty tensor); `omnic build --weights` takes this route and gives the MLX target's
file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import runtime_torch
from compiler import compile
from runtime_common.mapped_file import MappedFile, layout
from tests.op_examples import ENV, OP_EXAMPLES

SPECS = [("examples/" + n, None) for n in ("tiny_lm.json", "tiny_moe.json", "tiny_vlm.json")] + [
    (f"{op}[{i}]", ex) for op, exs in sorted(OP_EXAMPLES.items())
    for i, ex in enumerate(exs if isinstance(exs, list) else [exs])]


def _compiled(path, example):
    if example is None:
        return compile(path).raise_for_errors()
    return compile(example, batch=ENV["B"], context=ENV["T"], frames=ENV["F"]).raise_for_errors()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name,example", SPECS, ids=[s[0] for s in SPECS])
def test_written_file_is_save_weights_of_the_seeded_build(name, example, dtype, tmp_path):
    c = _compiled(name, example)
    want, got = tmp_path / "want.safetensors", tmp_path / "got.safetensors"
    runtime_torch.save_weights(c.to_torch(seed=5, dtype=dtype), want)
    meta = c.to_torch(device="meta", dtype=dtype)
    assert runtime_torch.write_seeded(meta, got, seed=5, n_threads=2), "fell back to building the model"
    assert got.read_bytes() == want.read_bytes()


def test_layout_is_safetensors_own():
    from safetensors.numpy import save
    tensors = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.scale": np.array(2.0, dtype=np.float32),
               "empty": np.zeros((0, 4), dtype=np.float32), "näme.ü": np.ones(3, dtype=np.float32)}
    blob = save(tensors, metadata={"format": "pt"})
    header, _ = layout({k: ("F32", v.shape) for k, v in tensors.items()}, {"format": "pt"})
    n = int.from_bytes(blob[:8], "little")
    assert blob[8:8 + n] == header
    assert layout({"a": ("F32", (2,)), "b": ("BF16", (2,))}) is None     # several dtypes: safetensors' own order


def test_mapped_file_round_trip(tmp_path):
    from safetensors.numpy import load_file
    path = tmp_path / "m.safetensors"
    shapes = {"x": (3, 5), "y": (7,), "z": (0, 2)}
    with MappedFile(path, {k: ("F32", s) for k, s in shapes.items()}) as f:
        for k, s in shapes.items():
            view = np.frombuffer(f.buffer, np.float32, int(np.prod(s)), f.offset(k))
            view[:] = np.arange(view.size) + len(k)
            assert f.nbytes(k) == view.nbytes
            del view
    got = load_file(str(path))
    assert sorted(got) == sorted(shapes)
    for k, s in shapes.items():
        assert got[k].shape == s and np.array_equal(got[k].ravel(), np.arange(int(np.prod(s))) + len(k))
    with pytest.raises(ValueError, match="one dtype"):
        MappedFile(tmp_path / "n.safetensors", {"a": ("F32", (1,)), "b": ("F16", (1,))})


def test_a_state_dict_tensor_not_declared_falls_back(tmp_path):
    """A tensor the seed does not give (an extra buffer) means the file cannot be drawn: nothing is written."""
    c = compile("examples/tiny_lm.json")
    meta = c.to_torch(device="meta")
    meta.register_buffer("extra", torch.zeros(3, device="meta"))
    assert not runtime_torch.write_seeded(meta, tmp_path / "x.safetensors", seed=0)
    assert not (tmp_path / "x.safetensors").exists()


def test_build_with_weights_draws_into_the_file(tmp_path, monkeypatch):
    """`omnic build --target torch --weights` writes through write_seeded (the model is never materialised), and its
    file is the MLX target's for the same seed."""
    from runtime_torch import emit
    c = compile("examples/tiny_vlm.json")
    monkeypatch.setattr(runtime_torch, "materialise", lambda *a, **k: pytest.fail("the model was materialised"))
    emit.write(c, tmp_path / "t", weights=True, seed=4)
    monkeypatch.undo()
    want = tmp_path / "want.safetensors"
    runtime_torch.save_weights(c.to_torch(seed=4), want)
    assert (tmp_path / "t" / "model.safetensors").read_bytes() == want.read_bytes()
    pytest.importorskip("runtime_mlx")
    from runtime_mlx import emit as mlx_emit
    mlx_emit.write(c, tmp_path / "m", weights=True, seed=4)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == want.read_bytes()


def test_a_full_disk_is_a_one_line_build_error(tmp_path, monkeypatch):
    """The file's blocks are reserved before the map is written (a full disk would otherwise be a SIGBUS): no space
    is a clear error naming the file, and `omnic build` reports it in one line and leaves no output."""
    import errno
    import os

    from click.testing import CliRunner

    from compiler.cli import cli

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="no space for .*x.safetensors"):
        MappedFile(tmp_path / "x.safetensors", {"a": ("F32", (4,))})
    r = CliRunner().invoke(cli, ["build", "examples/tiny_lm.json", "--target", "torch", "-o", str(tmp_path / "out"),
                                 "--weights"])
    assert r.exit_code != 0 and "no space for" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out").exists()
