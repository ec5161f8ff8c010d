"""`repr(model)` of an OmnicModel in either runtime: one line per node with its op, resolved sizes and parameter
count, instead of the framework's tree of bare class names (`Lin()`).

    OmnicModel(torch, 1.22 M parameters; inputs: ids (B, T) int)
      (embed): Embedding(num_embeddings=1000, embedding_dim=64)  64.0 K
      (blocks.0): TransformerBlock(embed_dim=64, num_heads=4, ..., mlp='swiglu')  33.0 K
      (head): Linear(in_features=64, out_features=1000, bias=False)  tied to embed.weight
"""
from __future__ import annotations

from compiler.dims import shape_str
from compiler.tables import fmt_count

MAX_FIELDS = 8


def _fields(params) -> str:
    items = []
    for k, v in params.model_dump(mode="json", exclude_none=True).items():
        if k in ("note", "tied_name", "role") or isinstance(v, (dict, list)) and len(str(v)) > 40:
            continue
        items.append(f"{k}={v!r}")
    more = f", ... ({len(items) - MAX_FIELDS} more)" if len(items) > MAX_FIELDS else ""
    return ", ".join(items[:MAX_FIELDS]) + more


def model_repr(model, runtime: str) -> str:
    g = model.graph
    own = {n: w for n, w in model.weight_decls.items() if n not in model.ties}
    total = sum(w.numel for w in own.values())
    ins = "; ".join(f"{n.name} {shape_str(n.out.shape)} {n.out.dtype}" for n in g.nodes()
                    if n.op == "Input" and n.outputs)
    lines = [f"OmnicModel({runtime}, {fmt_count(total)} parameters; inputs: {ins})"]
    for n in g.nodes():
        if n.op == "Input":
            continue
        count = sum(w.numel for k, w in own.items() if k.startswith(n.name + "."))
        tied = [f"tied to {model.ties[k]}" for k in model.weight_decls if k in model.ties and k.startswith(n.name + ".")]
        size = ", ".join(([fmt_count(count)] if count else []) + tied) or "no parameters"
        lines.append(f"  ({n.name}): {n.op}({_fields(n.params)})  {size}")
    return "\n".join(lines)
