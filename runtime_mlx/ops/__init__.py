"""MLX implementations of the compiler's ops, one file per op family (mirroring `compiler/ops/` and
`runtime_torch/ops/`).

Every module here is imported by `runtime_mlx.registry` on first use; each registers its classes with
`@implements("<op name>")`.
"""
