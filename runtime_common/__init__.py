"""What omnic's two runtimes share: the framework-free half of `runtime_torch` and `runtime_mlx`, written once.

Plain Python that imports only `compiler` (never torch, mlx or numpy at import); each runtime passes in what differs
(its name, a few callables) and keeps only its framework's code. Parts: `emit.py` (the generated model.py),
`registry.py` (the table of op implementations), `plan.py` (how an OmnicModel runs its graph; ties; the check of
each node's declared tensors), `weights.py` (load errors, checkpoint renaming),
`decode.py` (DecodeSession: the prefill and decode plans of token-by-token generation), `init.py` (the seed
scheme; its `draw` imports torch when called, nothing at import).
"""
