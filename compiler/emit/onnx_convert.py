"""A torch.export program to an ONNX model (onnx_ir), optimised and saved: the conversion under `--target onnx` and
`--target onnx-decode` (compiler/emit/onnx.py, onnx_decode.py).

    model = convert(program, input_names, output_names)   # onnx_ir.Model, weights still the torch tensors
    optimise(model)                                       # constant folding and clean-up, no pattern rewriter
    save(model, path, external)                           # model.onnx (+ model.onnx.data, written tensor by tensor)

What `torch.onnx.export(program, dynamo=True)` does, minus its two costs that grow with the model
(nanoVLM original_small, 2,165 graph nodes, on 2 cores):
  - it traces the program a second time to decompose it (`run_decompositions`, 17 s): the program torch.export
    gives holds, here, only ATen ops the ONNX registry translates directly, but for four: `_assert_tensor_metadata`
    (dropped, as the exporter drops it), `detach_` (the identity in an exported graph), `to.dtype` (its
    `_to_copy` form) and `rms_norm` (translated below with opset-18 ops; torchlib has it only from opset 23). When
    any other op is left, the program goes through the exporter's own decomposition, as before (`&`, `|`, `^` on
    tensors become the bitwise ops they are);
  - its type-promotion pass (3 s) runs every node again on fake tensors to learn dtypes that the program's nodes
    already carry (`meta["val"]`): here only the nodes it changes (a cast inserted, an overload swapped) run again;
  - its optimiser runs onnxscript's pattern rewriter (fusions for other runtimes, 49 of its 65 s on the 222M
    model); `optimise` runs the same passes without it (constant folding, unused nodes, constants lifted,
    duplicate initialisers merged, common subexpressions).
The result is checked against torch in onnxruntime by the callers, whichever path was taken.
`save` writes the weights into model.onnx.data one tensor at a time (the transposed weights that constant folding
leaves as views are made contiguous one at a time, with torch's blocked copy): no second copy of the weights is
held, unlike a protobuf holding them all.
Sources: torch/onnx/_internal/exporter/_core.py (`export`: decompose, promote, translate, optimise),
onnxscript/optimizer/_optimizer.py (`optimize_ir`), onnx_ir/external_data.py.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import onnx_ir as ir
import onnxscript
import torch
from onnx_ir.passes import common as passes
from onnxscript import opset18 as op

aten = torch.ops.aten
#: ops of the exported program the registry lacks, rewritten in place into ones it has (None: dropped)
_SAME = {aten.__and__.Tensor: aten.bitwise_and.Tensor, aten.__or__.Tensor: aten.bitwise_or.Tensor,
         aten.__xor__.Tensor: aten.bitwise_xor.Tensor}      # Python's operators on tensors: the aten op they call
_ASSERTS = {aten._assert_tensor_metadata.default, aten._assert_async.default, aten._assert_async.msg,
            aten._assert_scalar.default, aten.sym_constrain_range_for_size.default}


def _rms_norm(input, normalized_shape, weight=None, eps=None):
    """aten.rms_norm in opset-18 ops: x / sqrt(mean(x^2) + eps) * weight over the last len(normalized_shape) axes."""
    axes = op.Constant(value_ints=[-(i + 1) for i in range(len(normalized_shape))])
    ms = op.ReduceMean(op.Mul(input, input), axes, keepdims=1)
    e = op.CastLike(op.Constant(value_float=eps if eps is not None else float(np.finfo(np.float32).eps)), ms)
    y = op.Div(input, op.Sqrt(op.Add(ms, e)))
    return y if weight is None else op.Mul(y, weight)


def registry():
    """torchlib's ONNX registry (opset 18) with aten.rms_norm added."""
    from torch.onnx._internal.exporter import _registration
    reg = _registration.ONNXRegistry.from_torchlib()
    if not reg.is_registered(aten.rms_norm.default):
        reg.register_op(aten.rms_norm.default, onnxscript.TracedOnnxFunction(onnxscript.values.Opset("", 18),
                                                                            _rms_norm))
    return reg


def _rewrite(program) -> None:
    """Replace, in place, the program's ops that have direct equivalents the registry translates."""
    for gm in program.graph_module.modules():
        if isinstance(gm, torch.fx.GraphModule):
            _rewrite_graph(gm)


def _rewrite_graph(gm) -> None:
    g = gm.graph
    for n in list(g.nodes):
        if n.op != "call_function":
            continue
        if n.target in _ASSERTS:
            g.erase_node(n)
        elif n.target in (aten.detach_.default, aten.detach.default, aten.alias.default):
            n.replace_all_uses_with(n.args[0])
            g.erase_node(n)
        elif n.target in _SAME:
            n.target = _SAME[n.target]
        elif n.target is aten.to.dtype:
            with g.inserting_before(n):
                m = g.call_function(aten._to_copy.default, (n.args[0],), {"dtype": n.args[1]})
            m.meta = dict(n.meta)
            n.replace_all_uses_with(m)
            g.erase_node(n)
    gm.recompile()


def _constants(gm) -> dict[tuple[str, str], torch.Tensor]:
    """{(subgraph path, attribute): tensor} of the tensor constants of the subgraphs (compiler/emit/onnx_repeat.py),
    read as get_attr nodes."""
    out = {}
    for path, sub in gm.named_modules():
        if sub is not gm and isinstance(sub, torch.fx.GraphModule):
            for n in sub.graph.nodes:
                if n.op == "get_attr" and isinstance(t := getattr(sub, n.target, None), torch.Tensor):
                    out[(path, n.target)] = t
    return out


def _subgraph_constants(gm, known: dict[tuple[str, str], torch.Tensor]) -> None:
    """Give each subgraph constant's get_attr node its value as meta["val"], which is what the exporter saves (it
    holds a fake tensor): the constant itself, or, where the decomposition's second trace left a fake tensor, the
    constant at the same place before it (`known`, from `_constants`)."""
    from torch._subclasses.fake_tensor import FakeTensor
    for (path, target), t in _constants(gm).items():
        if isinstance(t, FakeTensor):
            t = known.get((path, target))
            if t is None or isinstance(t, FakeTensor):
                raise ValueError(f"the constant {target} of subgraph {path} has no value after the decomposition")
        for n in gm.get_submodule(path).graph.nodes:
            if n.op == "get_attr" and n.target == target:
                n.meta["val"] = t


def _untranslated(program, reg) -> set[str]:
    from torch.onnx._internal.exporter import _decomp
    have = set(_decomp.get_onnx_implemented_overloads(reg))
    return {str(n.target) for gm in program.graph_module.modules() if isinstance(gm, torch.fx.GraphModule)
            for n in gm.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and n.target not in have}


def _promote(gm) -> None:
    """The exporter's type-promotion pass, running again only the nodes it changes (see the module docstring)."""
    from torch.onnx._internal.fx.passes import type_promotion as tp

    class Interpreter(tp._TypePromotionInterpreter):
        def run_node(self, n):
            with self._set_current_node(n):
                if rule := tp.get_type_promotion_rule(n, self.type_promotion_table):
                    self._maybe_promote_node(n, rule)      # reruns n (and runs the casts it adds) when it changes
            if n.op == "call_function" and "val" in n.meta:
                return n.meta["val"]
            return torch.fx.Interpreter.run_node(self, n)

    for module in gm.modules():
        p = tp.InsertTypePromotion(module)
        p.interpreter = Interpreter(module, tp.TypePromotionTable())
        p.run()


def convert(program, input_names: Sequence[str], output_names: Sequence[str], dynamic_shapes=()
            ) -> tuple[ir.Model, str]:
    """(the ONNX model of an ExportedProgram, its inputs and outputs renamed, its dynamic axes named as the
    torch.export.Dim of `dynamic_shapes` (one {axis: Dim} per input), not optimised; the path taken: "direct" or
    "decomposed")."""
    from torch.onnx._internal.exporter import _core, _dynamic_shapes, _fx_passes, _ir_passes
    reg = registry()
    _rewrite(program)
    known = _constants(program.graph_module)
    path = "direct"
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        if _untranslated(program, reg):
            program = _fx_passes.decompose_with_registry(program, reg)
            path = "decomposed"
        gm = _fx_passes.remove_assertion_nodes(program.graph_module)
        _promote(gm)
        program._graph_module = gm
    _subgraph_constants(gm, known)
    onnx_program = _core._exported_program_to_onnx_program(program, registry=reg)
    model = onnx_program.model
    _ir_passes.rename_inputs(model, list(input_names))
    _ir_passes.rename_outputs(model, list(output_names))
    if dynamic_shapes:
        _ir_passes.rename_axis(model, _dynamic_shapes.create_rename_mapping(model.graph.inputs, tuple(dynamic_shapes)))
    return model, path


def _fold(every_round: bool = False):
    """onnxscript's constant folding with shape inference (onnx's, node by node). Unless `every_round`, the
    inference runs only in the first of the optimiser's two rounds: the second (run when the first folded
    something) sees the types and shapes the first inferred, visiting the nodes in the same order (the graph
    is the same, tests/test_onnx.py; nanoVLM original_small: the optimiser takes 1.8 s instead of 2.2 s)."""
    from onnxscript.optimizer import _constant_folding

    class Fold(_constant_folding.FoldConstantsPass):
        def call(self, model):
            try:
                return super().call(model)
            finally:
                self.shape_inference = every_round

    return Fold(shape_inference=True, input_size_limit=8192, output_size_limit=262144)


def optimise(model: ir.Model, every_round: bool = False) -> None:
    """onnxscript's `optimize_ir` without the pattern rewriter: inline, fold constants (`_fold`), drop what is
    unused, lift constants to initialisers, merge duplicates and common subexpressions."""
    fold = ir.passes.PassManager([
        _fold(every_round), passes.RemoveUnusedNodesPass(), passes.RemoveUnusedFunctionsPass(),
        passes.RemoveUnusedOpsetsPass()], steps=2, early_stop=True)
    ir.passes.Sequential(
        passes.InlinePass(), fold, passes.RemoveUnusedNodesPass(),
        passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        passes.LiftSubgraphInitializersToMainGraphPass(), passes.DeduplicateInitializersPass(),
        passes.CommonSubexpressionEliminationPass(), passes.OutputFixPass(), passes.NameFixPass())(model)


def _contiguous(t):
    """A tensor of the model whose bytes are a strided view (a folded Transpose of a weight): copied contiguous
    when it is written, not before."""
    raw = getattr(t, "raw", None)
    if isinstance(raw, np.ndarray) and not raw.flags.c_contiguous:
        return ir.LazyTensor(lambda a=raw: torch.from_numpy(a).contiguous().numpy(), dtype=t.dtype, shape=t.shape,
                             name=t.name)
    return t


def save(model: ir.Model, path: str | os.PathLike, external: bool) -> None:
    """model.onnx at `path`; with `external`, its weights in model.onnx.data beside it, written tensor by tensor."""
    for v in model.graph.initializers.values():
        if v.const_value is not None:
            v.const_value = _contiguous(v.const_value)
    ir.save(model, os.fspath(path), external_data=os.path.basename(path) + ".data" if external else None)
