"""Fuzzing `compile()` beyond CI: atheris (coverage-guided libFuzzer) when installed, else hypothesis's long run.

    pip install atheris
    python tests/fuzz_compile.py -max_total_time=600            # libFuzzer flags pass through
    python tests/fuzz_compile.py --hypothesis                    # no atheris: the property tests, 100x the examples

Each input is the bytes of a spec file. The corpus (out/fuzz/corpus, git-ignored) is seeded with the shipped specs,
the bad-spec corpus and random valid specs from tests/strategies.py. Half the mutations are libFuzzer's byte
mutations, steered by a dictionary of JSON punctuation, spec keys, op names and parameter names from the registry;
the other half parse the input and change its structure (a value replaced by a bound, a wrong type, a symbol, an op
name or an id of the spec; a key deleted or added; an item copied or swapped), which reaches lowering, shape
inference and accounting far more often than flipped bytes do. For every input:
  - `compile()` returns (an exception is a finding; atheris saves the input as out/fuzz/crash-*);
  - every error diagnostic names the file and a line/col, or a JSON path;
  - one input in 16 (chosen by its hash, so a replay repeats it) also runs `omnic check`, which must exit 0, 1 or 2
    (2 exactly when compile() reports an error) and never print a traceback.
Replay a saved input: `python tests/fuzz_compile.py out/fuzz/crash-...` (libFuzzer runs the files it is given).
docs/fuzzing.md records the runs made so far and what they found.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "out", "fuzz")
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)


def invariants(compiler, cli, spec_path: str, data: bytes) -> None:
    c = compiler.compile(spec_path)
    for d in c.errors:
        assert d.file, f"error without a file: {d.render()}"
        assert (d.line is not None and d.col is not None) or d.path, f"unlocated error: {d.render()}"
    if hashlib.blake2b(data, digest_size=1).digest()[0] % 16 == 0:
        from click.testing import CliRunner
        r = CliRunner().invoke(cli, ["check", "-q", spec_path])
        assert "Traceback" not in r.output and "internal error" not in r.output, r.output
        assert r.exit_code == (2 if not c.ok else r.exit_code) and r.exit_code in (0, 1, 2), (r.exit_code, r.output)


def seed_corpus(corpus: str, n_random: int = 60) -> None:
    """Shipped specs, the bad-spec corpus, and random valid specs (written once)."""
    os.makedirs(corpus, exist_ok=True)
    if os.listdir(corpus):
        return
    import glob
    files = glob.glob(os.path.join(ROOT, "specs", "**", "*.json"), recursive=True)
    files += glob.glob(os.path.join(HERE, "bad_specs", "**", "*.json"), recursive=True)
    for f in files:
        with open(f, "rb") as src:
            data = src.read()
        if len(data) < 200_000:
            with open(os.path.join(corpus, hashlib.sha1(data).hexdigest()), "wb") as dst:
                dst.write(data)
    from hypothesis.errors import NonInteractiveExampleWarning
    import strategies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        for _ in range(n_random):
            data = json.dumps(strategies.specs().example().spec, indent=1).encode()
            with open(os.path.join(corpus, hashlib.sha1(data).hexdigest()), "wb") as dst:
                dst.write(data)


def write_dictionary(path: str) -> None:
    """libFuzzer dictionary: tokens a mutation may insert whole."""
    from compiler import registry
    from compiler.spec import LAYER_KEYS, SpecDoc
    words = {"{", "}", "[", "]", ":", ",", "\"", "true", "false", "null", "0", "-1", "1e400", "NaN", "\\u0000",
             "\\ud800", "\"B\"", "\"T\"", "\"F\"", "\"T+1\"", "\"B*T\"", "4096", "10000000", "999999999999"}
    words |= {json.dumps(k) for k in list(SpecDoc.model_fields) + ["$schema"] + list(LAYER_KEYS)}
    for name, op in registry.all_ops().items():
        words.add(json.dumps(name))
        words |= {json.dumps(k) for k in op.Params.model_fields}
    with open(path, "w") as f:
        for i, w in enumerate(sorted(words)):
            f.write(f"w{i}={json.dumps(w)}\n")


def interesting_values(doc) -> list:
    """Values worth trying anywhere: bounds, wrong types, symbols, op names, and the ids the spec already has."""
    from compiler import registry
    vals = [0, -1, 1, 2, 3, 7, 8, 16, 64, 4096, 4097, 10_000_000, 10_000_001, 10**12, 10**99, 0.5, -0.0, 1e308,
            True, False, None, "", "B", "T", "F", "T+1", "B*T", "2*T", "T-T", "image", "tokens", "ids", "vector",
            "swiglu", "rmsnorm", "1d", "2d", "sequence", "channels", "6GiB", "1B", [], {}, [1, 2], {"a": 1}]
    vals += list(registry.all_ops())
    if isinstance(doc, dict) and isinstance(doc.get("layers"), list):
        ids = [l.get("id") for l in doc["layers"] if isinstance(l, dict) and isinstance(l.get("id"), str)]
        vals += ids + [[i] for i in ids] + [ids[::-1]] + [i + ".out" for i in ids]
    return vals


def known_keys() -> list[str]:
    from compiler import registry
    from compiler.spec import LAYER_KEYS, SpecDoc
    keys = set(SpecDoc.model_fields) | set(LAYER_KEYS)
    for op in registry.all_ops().values():
        keys |= set(op.Params.model_fields)
    return sorted(keys)


def mutate_doc(doc, rng):
    """One structural change to a parsed spec: a value replaced, a key deleted or added, an item copied or swapped."""
    spots = []                                                   # (container, key or index) of every value

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                spots.append((x, k))
                walk(v)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                spots.append((x, i))
                walk(v)
    walk(doc)
    containers = [c for c, _ in spots] + [doc]
    action = rng.choice(["replace", "replace", "replace", "delete", "add", "copy", "swap"])
    if action == "replace" and spots:
        c, k = rng.choice(spots)
        c[k] = json.loads(json.dumps(rng.choice(interesting_values(doc))))
    elif action == "delete" and spots:
        c, k = rng.choice(spots)
        del c[k]
    elif action == "add":
        c = rng.choice(containers)
        v = json.loads(json.dumps(rng.choice(interesting_values(doc))))
        if isinstance(c, dict):
            c[rng.choice(known_keys())] = v
        elif isinstance(c, list):
            c.insert(rng.randint(0, len(c)), v)
    elif action in ("copy", "swap"):
        lists = [c for c in containers if isinstance(c, list) and c]
        if lists:
            c = rng.choice(lists)
            i, j = rng.randrange(len(c)), rng.randrange(len(c))
            if action == "copy":
                c.insert(j, json.loads(json.dumps(c[i])))
            else:
                c[i], c[j] = c[j], c[i]
    return doc


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half of the time libFuzzer's byte mutations; else, if the input is JSON, 1-3 structural changes."""
    import random

    import atheris
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return atheris.Mutate(data, max_size)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return atheris.Mutate(data, max_size)
    for _ in range(rng.randint(1, 3)):
        doc = mutate_doc(doc, rng)
    try:
        out = json.dumps(doc, indent=rng.choice([None, 1])).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return atheris.Mutate(data, max_size)
    return out[:max_size]


def run_atheris(argv: list[str]) -> None:
    import atheris
    with atheris.instrument_imports(include=["compiler"]):
        import compiler
        import compiler.cli
    cli = compiler.cli.cli
    tmp = tempfile.mkdtemp(prefix="omnic-fuzz-")
    spec_path = os.path.join(tmp, "spec.json")

    def target(data: bytes) -> None:
        with open(spec_path, "wb") as f:
            f.write(data)
        invariants(compiler, cli, spec_path, data)

    files = [a for a in argv[1:] if not a.startswith("-")]
    flags = [a for a in argv[1:] if a.startswith("-")]
    if not files:                        # fuzz from the seeded corpus; else libFuzzer replays the given files
        corpus = os.path.join(OUT, "corpus")
        seed_corpus(corpus)
        files = [corpus]
    if not any(f.startswith("-dict=") for f in flags):
        dict_path = os.path.join(OUT, "omnic.dict")
        os.makedirs(OUT, exist_ok=True)
        write_dictionary(dict_path)
        flags.append(f"-dict={dict_path}")
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={OUT}/")
    if not any(f.startswith("-max_len=") for f in flags):
        flags.append("-max_len=8192")
    if not any(f.startswith("-timeout=") for f in flags):
        flags.append("-timeout=60")     # seconds per input: a slower one is a hang (20,000 nodes take seconds)
    atheris.Setup([argv[0], *flags, *files], target, custom_mutator=custom_mutator)
    atheris.Fuzz()


def run_hypothesis(argv: list[str]) -> int:
    import pytest
    os.environ["HYPOTHESIS_PROFILE"] = "long"
    return pytest.main(["-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
                        os.path.join(HERE, "test_properties.py"), *[a for a in argv[1:] if a != "--hypothesis"]])


def main() -> None:
    if "--hypothesis" in sys.argv:
        sys.exit(run_hypothesis(sys.argv))
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install atheris): running the hypothesis long profile", file=sys.stderr)
        sys.exit(run_hypothesis(sys.argv))
    run_atheris(sys.argv)


if __name__ == "__main__":
    main()
