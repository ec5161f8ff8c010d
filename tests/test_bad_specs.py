"""The bad-spec corpus: every file in tests/bad_specs/ is refused with a located error, quickly, without a traceback.

Each file holds one mistake; `CASES` says which diagnostic it must produce: its code (None where the pass sets none),
a substring of its message or hint, and where meaningful its `line:col`. For every file:
  - `compile()` returns (never raises) with at least one error, every error naming its file and a line/col or a
    JSON path;
  - it takes under `LIMIT_S` seconds of this process's CPU time, so other load on the machine does not count (a
    hard wall-clock alarm stops a hang);
  - `omnic check FILE` exits 2, with no "Traceback" in its output;
and the whole corpus, run as `python -m compiler check` in one child process under an address-space limit, exits 2
for every file with bounded memory. Two files are generated here instead of committed: one of tens of MB, and one
of too many tokens. Helper files for includes live in tests/bad_specs/inc/ and are not cases themselves.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import compiler
from compiler.cli import cli

HERE = Path(__file__).parent
CORPUS = HERE / "bad_specs"
LIMIT_S = float(os.environ.get("OMNIC_BAD_SPEC_SECONDS", "2"))
HARD_S = 20                            # a case still running then is a hang: the alarm fails it
MEMORY_LIMIT = 1536 * 2**20            # address space of the CLI child running the whole corpus

# file: (code, substring of message or hint, "line:col" or None)
CASES: dict[str, tuple[str | None, str, str | None]] = {
    # --- JSON syntax and encoding ----------------------------------------------------------------------------------
    "json_truncated.json": ("json", "found end of file", "4:52"),
    "json_truncated_in_string.json": ("json", "invalid JSON at '\"ba'", "2:11"),
    "json_missing_colon.json": ("json", "expected ':'", "2:10"),
    "json_missing_comma.json": ("json", "expected ',' or '}'", "3:3"),
    "json_trailing_comma_object.json": ("json", "trailing comma", "5:53"),
    "json_trailing_comma_array.json": ("json", "trailing comma", "6:3"),
    "json_single_quotes.json": ("json", "double quotes", "2:3"),
    "json_comment_line.json": ("json", "no comments", "2:3"),
    "json_comment_block.json": ("json", "no comments", "2:18"),
    "json_comment_hash.json": ("json", "no comments", "3:3"),
    "json_nan.json": ("json", "no NaN or Infinity", "5:45"),
    "json_infinity.json": ("json", "no NaN or Infinity", "5:45"),
    "json_neg_infinity.json": ("json", "no NaN or Infinity", "5:46"),
    "json_number_1e400.json": ("json", "1e400 is out of range", "5:45"),
    "json_number_5000_digits.json": ("json", "5,000 characters", "5:51"),
    "json_duplicate_key.json": ("json", "duplicate key 'name' (first at line 2, column 3)", "4:3"),
    "json_duplicate_key_nested.json": ("json", "duplicate key 'out_features' (first at line 5, column 35)", "6:21"),
    "json_trailing_garbage.json": ("json", "after the end of the JSON document", "8:1"),
    "json_control_char.json": ("json", "control characters must be escaped", "2:11"),
    "json_lone_surrogate.json": ("json", "unpaired surrogate", "2:11"),
    "json_nul_byte.json": ("json", "invalid JSON at '\\x00'", "2:17"),
    "json_empty.json": ("json", "empty spec", "1:1"),
    "json_whitespace_only.json": ("json", "empty spec", "1:1"),
    "json_top_array.json": ("type", "must be a JSON object", "1:1"),
    "json_top_string.json": ("type", "must be a JSON object", "1:1"),
    "json_top_number.json": ("type", "must be a JSON object", "1:1"),
    "json_top_null.json": ("type", "must be a JSON object", "1:1"),
    "json_deep_10k_arrays.json": ("json", "nested deeper than 64", "1:91"),
    "json_deep_10k_objects.json": ("json", "nested deeper than 64", "1:423"),
    "json_not_utf8.json": ("encoding", "not UTF-8: byte 0xe9", "2:15"),
    "json_utf16.json": ("encoding", "not UTF-8", "1:1"),
    # a UTF-8 BOM is skipped (RFC 8259 allows it) and does not shift columns
    "json_utf8_bom_then_error.json": ("unknown-key", "did you mean 'layers'?", "3:3"),
    # --- the document ------------------------------------------------------------------------------------------------
    "doc_missing_layers.json": ("missing", "required key is missing", "1:1"),
    "doc_missing_name.json": ("missing", "required key is missing", "1:1"),
    "doc_unknown_key.json": ("unknown-key", "did you mean 'layers'?", "3:3"),
    "doc_layers_not_a_list.json": ("type", "expected a list, got an object", "3:3"),
    "doc_context_string.json": ("type", "write the number without quotes", "3:3"),
    "doc_batch_zero.json": ("value", "greater than or equal to 1", "3:3"),
    "doc_budget_bad_size.json": ("value", "cannot read size '6 GiGs'", "4:14"),
    "doc_budget_infinite.json": ("value", "out of range", "4:14"),
    "doc_budget_unknown_format.json": (None, "unknown storage format 'bf61'", "4:30"),
    "doc_budget_batch_huge.json": ("value", "less than or equal to 1000000", "4:30"),
    "doc_budget_hsdp_not_dividing.json": ("layout", "3 replicas do not divide 8 devices", "4:44"),
    "doc_budget_too_many_devices.json": ("layout", "64-way sharding leaves devices without any part of the root unit", "4:65"),
    "doc_budget_per_device_inference.json": (None, "a per-device budget (devices / strategy) limits training", "4:30"),
    "doc_expect_unknown_key.json": ("value", "did you mean 'params.total'?", "4:3"),
    "doc_input_unknown_kind.json": ("enum", "did you mean 'image'?", "3:28"),
    "doc_input_unknown_symbol.json": (None, "unknown size symbol 'L'", "3:61"),
    "doc_input_wrong_rank.json": (None, "a tokens input has 3 dimensions, got 2", "3:46"),
    "doc_input_negative_dim.json": (None, "dimension must be positive, got -16", "3:66"),
    "doc_input_zero_dim.json": (None, "dimension must be positive, got 0", "3:66"),
    "doc_input_huge_dim.json": ("limit", "out of range", "3:61"),
    "doc_input_symbol_power.json": ("limit", "out of range", "3:61"),
    "doc_input_symbolic_width.json": (None, "the width of a tokens input must be a number, got 'T'", "3:66"),
    "doc_input_dim_expression_too_long.json": (None, "write at most 64", "3:61"),
    # --- layers ------------------------------------------------------------------------------------------------------
    "layer_not_an_object.json": ("type", "expected an object, got the string 'Linear'", "5:5"),
    "layer_params_not_an_object.json": (None, "params must be an object", "5:24"),
    "layer_type_missing.json": (None, "layer type is missing", "5:5"),
    "layer_unknown_type.json": ("unknown-type", "did you mean 'Linear'?", "5:6"),
    "layer_unknown_key.json": ("unknown-key", "did you mean 'params'?", "5:24"),
    "layer_unknown_param.json": ("unknown-key", "did you mean 'out_features'?", "5:35"),
    "layer_missing_param.json": ("missing", "required key is missing", "5:24"),
    "layer_int_as_string.json": ("type", "expected an integer, got the string '1024'", "5:35"),
    "layer_int_as_bool.json": ("type", "expected an integer, got a boolean", "5:35"),
    "layer_int_as_float.json": ("type", "expected an integer, got a number", "5:35"),
    "layer_negative_dim.json": ("value", "greater than or equal to 1", "5:35"),
    "layer_zero_dim.json": ("value", "greater than or equal to 1", "5:35"),
    "layer_huge_dim.json": ("value", "less than or equal to 10000000", "5:35"),
    "layer_bad_enum.json": ("enum", "did you mean 'gelu'?", "5:39"),
    "layer_invalid_id.json": (None, "invalid id '2fast'", "5:6"),
    "layer_duplicate_id.json": (None, "id 'a' is used twice", "6:6"),
    "layer_frozen_not_bool.json": (None, "frozen must be true or false", "5:24"),
    "layer_unknown_kind.json": ("unknown-type", "did you mean 'GQA_MoE_Layer'?", "5:45"),
    # --- TransformerBlock --------------------------------------------------------------------------------------------
    "block_kv_heads_not_dividing.json": ("shape", "num_kv_heads 3 does not divide num_heads 4", "5:74"),
    "block_heads_not_dividing_width.json": ("shape", "num_heads 5 does not divide the width 16", "5:58"),
    "block_depth_repeat_disagree.json": (None, "depth 2 and repeat 3 disagree", "5:47"),
    "block_layer_types_length.json": (None, "layer_types has 2 entries for 3 layers", "6:7"),
    "block_rope_dim_odd.json": ("shape", "rope_dim 3 must be even", "5:102"),
    "block_rope_rescale_and_scaling.json": ("shape", "both rescale the rotary frequencies", "6:6"),
    "block_width_mismatch.json": ("shape", "(edge: proj (B, T, 32) -> blk)", "6:78"),
    # --- wiring ------------------------------------------------------------------------------------------------------
    "edge_width_mismatch.json": ("shape", "dim is 64 but the input width is 32 (input shape (B, T, 32)) "
                                          "(edge: proj (B, T, 32) -> norm)", "6:72"),
    "edge_kind_mismatch.json": ("shape", "must be image, but proj gives tokens (B, T, 32)", "6:5"),
    "edge_cycle.json": ("cycle", "the wiring has a cycle: a -> b -> c -> a", "6:35"),
    "edge_self_loop.json": ("cycle", "takes its own output as input", "5:46"),
    "edge_dangling_input.json": ("dangling", "did you mean 'proj'?", "6:49"),
    "edge_inputs_not_strings.json": (None, "inputs must be a list of layer ids", "5:35"),
    "edge_inputs_empty.json": ("dangling", "inputs is empty, but LayerNorm reads 1 input(s)", "5:41"),
    "edge_implied_input_name_taken.json": ("no-input", "'input_ids' has no valid shape", "5:5"),
    "edge_inferred_flatten_fails.json": ("shape", "(edge: pixels (B, 3, T, 8) -> pixels_flatten)", "5:5"),
    "edge_unknown_output.json": (None, "unknown output 'porj'", "4:15"),
    "edge_no_stream_fits.json": ("no-input", "no stream fits LayerNorm 'norm'", "5:5"),
    "edge_tie_not_embedding.json": (None, "tie must name an Embedding layer", "6:69"),
    # --- includes ----------------------------------------------------------------------------------------------------
    "include_loop.json": ("include", "include loop: inc/loop_a.json -> inc/loop_b.json -> inc/loop_a.json", "5:19"),
    "include_self.json": ("include", "include loop: include_self.json", "5:19"),
    "include_escapes_folder.json": ("include", "leaves the spec's folder", "5:19"),
    "include_escapes_via_subfolder.json": ("include", "leaves the spec's folder", "5:19"),
    "include_url.json": ("include", "not URLs", "5:19"),
    "include_absolute_path.json": ("include", "must be a relative path", "5:19"),
    "include_missing_file.json": ("include", "included file not found", "5:19"),
    "include_not_json.json": ("include", "is not valid JSON", "5:19"),
    "include_not_a_layer.json": ("include", "must be an object with 'type' and 'params'", "5:19"),
    "include_not_a_string.json": (None, "include must be a relative file path", "5:19"),
    "include_nul_character.json": ("include", "NUL character", "5:19"),
    # --- limits: refused before anything is allocated ---------------------------------------------------------------
    "limit_repeat_huge.json": (None, "repeat must be an integer from 1 to 4096, got 1000000000000", "5:24"),
    "limit_repeat_zero.json": (None, "repeat must be an integer from 1 to 4096, got 0", "5:24"),
    "limit_depth_huge.json": ("value", "less than or equal to 4096", "5:75"),
    "limit_depth_times_repeat.json": ("limit", "unrolls into 16,777,216 copies", "5:5"),
    "limit_too_many_nodes.json": ("limit", "more than 20,000 nodes", "9:5"),
    "limit_absurd_params.json": ("limit", "parameters; the limit is", "4:3"),
    "limit_absurd_params_repeated.json": ("limit", "5.12e+14 parameters", "4:3"),
    "limit_absurd_memory.json": ("limit", "inference needs 8e+44 bytes", "4:3"),
    "limit_too_many_errors.json": ("limit", "100 errors; stopping here", None),
}


def corpus_files() -> list[str]:
    return sorted(p.name for p in CORPUS.glob("*.json"))


@contextlib.contextmanager
def hard_deadline(seconds: int):
    """Fail a hang instead of waiting for it (SIGALRM; the main thread of a POSIX process)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def compile_timed(path) -> tuple[compiler.Compiled, float]:
    """The compiled spec and the CPU seconds its compile took (this process only: a blow-up shows, a loaded machine
    does not)."""
    with hard_deadline(HARD_S):
        t0 = time.process_time()
        c = compiler.compile(path)
        return c, time.process_time() - t0


def assert_refused(c: compiler.Compiled, path: str | os.PathLike) -> None:
    """At least one error; every error is located: a file, and a line/col or a JSON path."""
    assert c.errors, f"{path}: no error diagnostic"
    for d in c.errors:
        assert d.severity == "error"
        assert d.file, f"{path}: error without a file: {d.render()}"
        assert (d.line is not None and d.col is not None) or d.path, f"{path}: unlocated error: {d.render()}"


# --- the table and the folder agree -----------------------------------------------------------------------------------
def test_every_corpus_file_has_an_expectation():
    assert set(corpus_files()) == set(CASES), "tests/bad_specs/*.json and CASES differ"
    assert len(CASES) >= 90


# --- each file --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_spec_is_refused_with_a_located_error(name, monkeypatch):
    monkeypatch.chdir(CORPUS)         # relative file names, as a person runs `omnic check`
    code, text, loc = CASES[name]
    c, seconds = compile_timed(name)
    assert_refused(c, name)
    assert seconds < LIMIT_S, f"{name}: {seconds:.2f} s (limit {LIMIT_S} s)"
    rendered = "\n".join(d.render() for d in c.errors)
    match = [d for d in c.errors if (code is None or d.code == code) and text in f"{d.message}\n{d.hint or ''}"]
    assert match, f"{name}: no error with code {code!r} containing {text!r}; got:\n{rendered}"
    if loc is not None:
        assert any(f"{d.line}:{d.col}" == loc for d in match), f"{name}: expected at {loc}; got:\n{rendered}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_check_exits_2_without_traceback(name, monkeypatch):
    monkeypatch.chdir(CORPUS)
    with hard_deadline(HARD_S):
        r = CliRunner().invoke(cli, ["check", name])
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert r.exit_code == 2, f"{name}: exit {r.exit_code}\n{out}\n{r.exception!r}"
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in out and "error" in out


def test_whole_corpus_through_the_real_entry_point_in_bounded_memory():
    """One child process, `python -m compiler check --json FILES...`, under an address-space limit."""
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    files = [str(CORPUS / n) for n in sorted(CASES)]
    r = subprocess.run([sys.executable, "-m", "compiler", "check", "--json", *files], capture_output=True, text=True,
                       timeout=300, preexec_fn=limit, cwd=HERE.parent)
    assert "Traceback" not in r.stderr + r.stdout and "internal error" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    results = doc["results"] if isinstance(doc, dict) else doc
    codes = {os.path.basename(x["file"]): x["exit_code"] for x in results}
    assert codes == {n: 2 for n in CASES}


# --- generated: too big to commit -------------------------------------------------------------------------------------
def test_file_of_tens_of_megabytes_is_refused_unread(tmp_path):
    big = tmp_path / "huge.json"
    layer = '{"type": "Linear", "params": {"out_features": 8}},\n'
    with open(big, "w") as f:
        f.write('{"name": "huge", "layers": [\n')
        f.write(layer * (40 * 2**20 // len(layer)))
        f.write('{"type": "Linear", "params": {"out_features": 8}}]}\n')
    assert big.stat().st_size > 40 * 2**20
    c, seconds = compile_timed(big)
    assert_refused(c, big)
    assert c.errors[0].code == "limit" and "the limit is" in c.errors[0].message
    assert seconds < LIMIT_S
    r = CliRunner().invoke(cli, ["check", str(big)])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_too_many_tokens_is_refused_early(tmp_path):
    """Under the byte limit but over the token limit: the parse stops at the limit instead of building it all."""
    from compiler.source import MAX_BYTES, MAX_TOKENS
    text = '{"name": "t", "layers": [' + ",".join(["1"] * (MAX_TOKENS // 2 + 10)) + "]}"
    assert len(text) < MAX_BYTES
    p = tmp_path / "tokens.json"
    p.write_text(text)
    c, seconds = compile_timed(p)
    assert_refused(c, p)
    assert "JSON tokens" in c.errors[0].message
    assert seconds < LIMIT_S


def test_nesting_limit_is_checked_before_the_stack_grows():
    """The parser recurses once per level and stops at MAX_DEPTH, so even a small recursion limit is enough."""
    from compiler.source import MAX_DEPTH, parse_text
    from compiler.diagnostics import SpecError
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_text(ok).data is not None
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(MAX_DEPTH + 60)
    try:
        with pytest.raises(SpecError, match="nested deeper than"):
            parse_text("[" * (2 * MAX_DEPTH) + "]" * (2 * MAX_DEPTH))
        with pytest.raises(SpecError, match="nested deeper than"):
            parse_text('{"a":' * 10_000 + "1" + "}" * 10_000)
    finally:
        sys.setrecursionlimit(old)


def test_deep_python_dict_is_a_diagnostic_not_a_recursion_error():
    d: dict = {}
    cur = d
    for _ in range(10_000):
        cur["a"] = {}
        cur = cur["a"]
    c = compiler.compile({"name": "deep", "layers": [d]})
    assert not c.ok and c.errors[0].code == "json"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1, 2}])
def test_dict_spec_with_non_json_values_is_a_diagnostic(value):
    c = compiler.compile({"name": "x", "layers": [{"type": "LayerNorm", "params": {"eps": value}}]})
    assert not c.ok and c.errors[0].code == "json"


@pytest.mark.parametrize("path", ["spec\x00.json", "x" * 5000, "no/such/dir/spec.json"])
def test_unreadable_paths_are_diagnostics(path):
    c = compiler.compile(path)
    assert not c.ok and c.errors[0].code == "io" and c.errors[0].file == path


def test_utf8_bom_before_a_valid_spec_is_accepted(tmp_path):
    """RFC 8259 lets a parser ignore a byte order mark; omnic does (json_utf8_bom_then_error checks columns)."""
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "b", "layers": [
        {"type": "Linear", "params": {"in_features": 4, "out_features": 4}}]}).encode())
    c = compiler.compile(p)
    assert c.ok, [d.render() for d in c.errors]
