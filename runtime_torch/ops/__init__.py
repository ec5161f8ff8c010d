"""Torch implementations of the compiler's ops, one file per op family (mirroring `compiler/ops/`).

Every module here is imported by `runtime_torch.registry` on first use; each registers its classes with
`@implements("<op name>")`.
"""
