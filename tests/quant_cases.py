"""The tiny decoder LM the quantisation tests build (tests/test_quant.py, tests/test_quant_mlx.py): 128 wide, so
every group size up to 128 divides its widths; `over` changes any DecoderLM parameter (family, ff_dim, tie, ...)."""


def spec(family: str = "llama", **over) -> dict:
    p = {"vocab_size": 96, "hidden": 128, "layers": 2, "heads": 4, "kv_heads": 2, "ff_dim": 256, "family": family,
         "tie": False, "rope_theta": 10000.0, "norm_eps": 1e-5, **over}
    return {"name": f"tiny-{family}", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
            "layers": [{"id": "lm", "type": "DecoderLM", "params": p}]}
