"""Builds without waste compute the same weights as before: a seeded build's values are fixed (golden digests of the
tiny examples, taken from the sequential draw-then-copy builder this replaced), whatever the number of threads, the
device the model was constructed on or the way a tensor got its storage; `weights=` loads a file into a model built
without storage; `draw_into` is `draw` for every rule."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from compiler import compile
from runtime_common.init import draw, draw_into

#: sha256 over (name, float32 bytes) of the sorted state dict, seed 3, float32 and bfloat16 builds
GOLDEN = {
    "examples/tiny_lm.json": ("11d8d24e932c615f865b2fd15c5787730b02c919643d754c4a3d8baf85e6793a",
                              "06cf4fe296a9fb339ee2e660562cdfdad2ea23174e0f1b6cc5bbf792f9b3b464"),
    "examples/tiny_moe.json": ("3f5fef5721c647b3a7f607cfd1d1955bd082f437e6fe94291d31f4b05a67aa80",
                               "ad19ad21f1c8ea56bc7b38b4fdc2c5d264b463b1499a2ecdceca610c90355c91"),
    "examples/tiny_vlm.json": ("05c11759cbdb2cedca1044840fd2dd76304cbcc6ef7db2e18f7a4799027ad65b",
                               "8cc8af03d21e92963f29b28a9391125582d64dbd762921a322b9d5676e18d498"),
}


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(torch.as_tensor(v).detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("spec", sorted(GOLDEN))
def test_seeded_weights_are_the_golden_ones(spec):
    c = compile(spec)
    assert digest(c.to_torch(seed=3).state_dict()) == GOLDEN[spec][0]
    assert digest(c.to_torch(seed=3, dtype="bfloat16").state_dict()) == GOLDEN[spec][1]


@pytest.mark.parametrize("n_threads", [1, 3])
def test_meta_build_equals_filling_an_allocated_model(n_threads):
    """The old way (every tensor allocated at construction, then filled in place, one thread) and the new one (built
    on meta, each tensor given its storage once by a pool of threads) give the same tensors, tied ones shared."""
    from runtime_torch import init
    from runtime_torch.model import OmnicModel
    c = compile("examples/tiny_vlm.json")
    allocated = OmnicModel(c)
    init.materialise(allocated, 5, n_threads=1)
    with torch.device("meta"):
        meta = OmnicModel(c)
    init.materialise(meta, 5, n_threads=n_threads)
    a, b = allocated.state_dict(), meta.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.is_meta for p in meta.parameters())
    for name, owner in meta.ties.items():
        assert meta.param(name) is meta.param(owner)
    lm = compile("examples/tiny_lm.json").to_torch()
    assert lm.param("head.weight") is lm.param("embed.weight")


def test_pool_hands_back_whatever_finished_first():
    """A large tensor keeps no other thread waiting: the others' results come back while it is still being made
    (here the largest only finishes once the caller has every other result: a pool that handed results back in
    submission order would wait for it first, and time out)."""
    import threading
    from runtime_common.pool import parallel
    names = [f"t{i}" for i in range(12)]
    sizes = [100] + [1] * 11
    rest_seen = threading.Event()

    def make(name):
        if name == "t0":
            assert rest_seen.wait(10), "the largest tensor held the pool back"
        return name.upper()

    got = []
    for name, value in parallel(names, make, sizes, "test", n_threads=2):
        got.append((name, value))
        if len(got) == len(names) - 1:
            rest_seen.set()
    assert got[-1] == ("t0", "T0") and sorted(got) == sorted((n, n.upper()) for n in names)


@pytest.mark.parametrize("ahead", [None, 1, 100])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_pool_prepares_in_the_callers_thread_before_each_make(ahead, n_threads):
    import threading
    from runtime_common.pool import parallel
    names = [f"t{i}" for i in range(20)]
    main, prepared, lock = threading.get_ident(), {}, threading.Lock()

    def prepare(name):
        assert threading.get_ident() == main
        with lock:
            prepared[name] = len(prepared)

    def make(name):
        with lock:
            assert name in prepared
        return prepared[name]

    got = dict(parallel(names, make, list(range(20)), "test", n_threads=n_threads, prepare=prepare, ahead=ahead))
    assert got == prepared and len(got) == 20
    assert [n for n, _ in sorted(prepared.items(), key=lambda kv: kv[1])] == names[::-1]     # largest first


def test_bfloat16_build_is_the_cast_float32_build():
    c = compile("examples/tiny_moe.json")
    f32, bf16 = c.to_torch(seed=1).state_dict(), c.to_torch(seed=1, dtype="bfloat16").state_dict()
    assert all(bf16[k].dtype == torch.bfloat16 and torch.equal(bf16[k], f32[k].to(torch.bfloat16)) for k in f32)


def test_init_false_allocates_and_meta_allocates_nothing():
    c = compile("examples/tiny_lm.json")
    m = c.to_torch(init=False)
    assert all(p.device.type == "cpu" and not p.is_meta for p in m.parameters())
    assert all(p.is_meta for p in c.to_torch(device="meta").parameters())


@pytest.mark.parametrize("rule", ["normal", "zeros", "ones", "const:0.25"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_draw_into_is_draw(rule, dtype):
    for shape in [(7,), (33, 5), (2, 3, 16)]:
        want = draw(rule, shape, 11, "a.weight").to(dtype)
        got = draw_into(torch.empty(shape, dtype=dtype), rule, 11, "a.weight")
        assert torch.equal(got, want)
    strided = torch.empty(5, 33).t()                  # not contiguous: drawn, then copied
    assert torch.equal(draw_into(strided, rule, 11, "a.weight"), draw(rule, (33, 5), 11, "a.weight"))


def test_weights_keyword_loads_into_a_model_without_storage(tmp_path):
    import runtime_torch
    c = compile("examples/tiny_vlm.json")
    seeded = c.to_torch(seed=2)
    path = tmp_path / "w.safetensors"
    runtime_torch.save_weights(seeded, path)
    loaded = c.to_torch(weights=path)
    want, got = seeded.state_dict(), loaded.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert digest(c.to_torch(weights=path, dtype="bfloat16").state_dict()) == digest(
        c.to_torch(seed=2, dtype="bfloat16").state_dict())
    ids = loaded.example_inputs()
    torch.testing.assert_close(loaded(**ids), seeded(**ids))
    with pytest.raises(ValueError, match="missing"):
        compile("examples/tiny_lm.json").to_torch(weights=path)


def test_training_a_loaded_model_leaves_its_file_alone(tmp_path):
    """Tensors loaded from a file may share its pages (copy-on-write maps): writing to them in place, as an
    optimiser does, must never reach the file."""
    import hashlib
    import runtime_torch
    c = compile("examples/tiny_lm.json")
    path = tmp_path / "w.safetensors"
    runtime_torch.save_weights(c.to_torch(seed=4), path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    into = c.to_torch(seed=5)
    runtime_torch.load_weights(into, path)
    for model in (c.to_torch(weights=path), into):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_mlx_seeded_and_loaded_weights_are_the_torch_ones(tmp_path):
    pytest.importorskip("runtime_mlx")
    import runtime_torch
    from runtime_mlx.weights import torch_layout_weights
    c = compile("examples/tiny_vlm.json")
    torch_model = c.to_torch(seed=3)
    mlx_state = {k: torch.from_numpy(np.array(v)) for k, v in
                 torch_layout_weights(c.to_mlx(seed=3)).items()}
    owned = {k: v for k, v in torch_model.state_dict().items() if k not in torch_model.ties}
    assert digest(mlx_state) == digest(owned)
    path = tmp_path / "w.safetensors"
    runtime_torch.save_weights(torch_model, path)
    loaded = {k: torch.from_numpy(np.array(v)) for k, v in
              torch_layout_weights(c.to_mlx(weights=path)).items()}
    assert digest(loaded) == digest(owned)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_mlx_values_drawn_into_its_arrays_are_the_converted_draws(dtype, n_threads):
    """MLX's seeded arrays are drawn straight into MLX's memory (permuted to MLX's layout and cast on the way,
    bfloat16 through uint16 storage): the same bits as drawing each tensor in float32, then converting it with MLX
    (`layout.to_mlx`, `astype`), which is the route it replaced (and still takes for a dtype numpy cannot view in
    place: float64 here)."""
    pytest.importorskip("runtime_mlx")
    import mlx.core as mx
    from runtime_mlx import init, layout
    from runtime_mlx.model import OmnicModel
    c = compile("examples/tiny_vlm.json")
    model = OmnicModel(c)
    model.set_dtype(getattr(mx, dtype))
    init.initialise(model, 7, n_threads=n_threads)
    checked = 0
    for name, w in model.weight_decls.items():
        if w.tied_to:
            continue
        want = layout.to_mlx(mx.array(draw(w.init_rule, tuple(w.shape), 7, name).numpy()), w.shape,
                             model.perms[name], source="torch", name=name).astype(getattr(mx, dtype))
        got = model.param(name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert mx.array_equal(got, want).item(), name
        checked += 1
    assert checked > 10 and any(p is not None for p in model.perms.values())    # kernels permuted too


@pytest.mark.parametrize("group_bytes", [1, 4096, 1 << 40])
def test_mlx_load_in_groups_gives_the_files_values(group_bytes, tmp_path, monkeypatch):
    """Whatever the size of the groups MLX evaluates a load in (one tensor each, a few, all at once), the model holds
    the file's values, cast and transposed to MLX's layout."""
    pytest.importorskip("runtime_mlx")
    import mlx.core as mx
    import runtime_torch
    from runtime_mlx import weights
    from runtime_mlx.weights import torch_layout_weights
    monkeypatch.setattr(weights, "GROUP_BYTES", group_bytes)
    c = compile("examples/tiny_vlm.json")
    seeded = c.to_torch(seed=8)
    path = tmp_path / "w.safetensors"
    runtime_torch.save_weights(seeded, path)
    owned = {k: v for k, v in seeded.state_dict().items() if k not in seeded.ties}
    for dtype in ("float32", "bfloat16"):
        got = torch_layout_weights(c.to_mlx(weights=path, dtype=dtype))
        assert sorted(got) == sorted(owned)
        for k, v in owned.items():
            want = mx.array(v.numpy()).astype(getattr(mx, dtype))
            assert got[k].dtype == want.dtype and mx.array_equal(got[k], want).item(), (dtype, k)


@pytest.mark.parametrize("model_dtype", ["float32", "bfloat16"])
def test_mlx_load_through_mx_load_equals_the_numpy_route(model_dtype, tmp_path, monkeypatch):
    """The MLX load reads a file with `mx.load` (lazy arrays, read when evaluated); a file `mx.load` cannot open is
    read through numpy's memory map instead. Both give the same model, bit for bit, for a file of every dtype cast to
    the model's, with convolution kernels transposed to MLX's layout."""
    pytest.importorskip("runtime_mlx")
    import mlx.core as mx
    import runtime_torch
    from runtime_mlx.weights import torch_layout_weights
    c = compile("examples/tiny_vlm.json")
    for file_dtype in ("float32", "bfloat16", "float16"):
        path = tmp_path / f"w_{file_dtype}.safetensors"
        runtime_torch.save_weights(c.to_torch(seed=6, dtype=file_dtype), path)
        calls = []
        real_load = mx.load
        monkeypatch.setattr(mx, "load", lambda *a, **k: calls.append(a[0]) or real_load(*a, **k))
        fast = c.to_mlx(weights=path, dtype=model_dtype)
        assert calls == [str(path)]                        # one mx.load for the file: the fast route was taken

        def refuse(*a, **k):
            raise RuntimeError("cannot open")
        monkeypatch.setattr(mx, "load", refuse)
        slow = c.to_mlx(weights=path, dtype=model_dtype)
        monkeypatch.setattr(mx, "load", real_load)
        a, b = torch_layout_weights(fast), torch_layout_weights(slow)
        assert sorted(a) == sorted(b)
        for k in a:
            assert a[k].dtype == b[k].dtype == getattr(mx, model_dtype), k
            assert mx.array_equal(a[k], b[k]).item(), (file_dtype, k)
        assert any(p is not None for p in fast.perms.values())      # the example has kernels to transpose
