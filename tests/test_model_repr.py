"""`Compiled.to_torch` / `to_mlx` have real signatures and docstrings; `print(model)` shows each node's op, sizes and
parameter count (checked against the instantiated module's own tensors), in both runtimes."""
from __future__ import annotations

import inspect
import re

import pytest

from compiler import Compiled, compile
from compiler.tables import fmt_count
from tests.tiny_specs import LM, RUNTIMES, VLM


def test_signatures_and_docstrings():
    assert list(inspect.signature(Compiled.to_torch).parameters) == ["self", "device", "dtype", "seed", "init", "weights"]
    assert list(inspect.signature(Compiled.to_mlx).parameters) == ["self", "dtype", "seed", "init", "weights"]
    for f in (Compiled.to_torch, Compiled.to_mlx):
        assert "seed" in f.__doc__ and "init=False" in f.__doc__ and "SpecError" in f.__doc__
    with pytest.raises(TypeError):
        compile(LM).to_torch(devcie="cpu")            # a misspelt keyword is refused at the call


def test_torch_repr_counts_match_the_module():
    model = compile(LM).to_torch()
    text = repr(model)
    total = sum(p.numel() for p in model.parameters())            # tied tensors once (torch dedupes them)
    assert text.splitlines()[0].startswith(f"OmnicModel(torch, {fmt_count(total)} parameters; inputs: ids (B, T)")
    for line in text.splitlines()[1:]:
        name = re.match(r"  \((.+?)\): ", line).group(1)
        own = sum(p.numel() for n, p in model.named_parameters() if n.startswith(name + "."))
        if name == "head":
            assert line.endswith("tied to embed.weight") and "Linear(in_features=32, out_features=64" in line
        else:
            assert line.endswith(f"  {fmt_count(own)}"), line
    assert "TransformerBlock(embed_dim=32, num_heads=4" in text and "Lin()" not in text


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_repr_names_every_node(runtime):
    c = compile(VLM)
    model = c.to_torch() if runtime == "torch" else c.to_mlx()
    lines = repr(model).splitlines()
    assert lines[0].startswith(f"OmnicModel({runtime}, ")
    assert [re.match(r"  \((.+?)\): (\w+)\(", line).groups() for line in lines[1:]] == \
        [(n.name, n.op) for n in c.graph.nodes() if n.op != "Input"]
