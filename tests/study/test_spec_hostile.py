"""Hostile and sloppy study files (issue #11 item 4): repeated keys, YAML 1.1 booleans where a
number is meant, absurd sizes, alias bombs, deep nesting, odd bytes. Each gets one line naming
the key, exit 2 and no traceback, quickly and in bounded memory; and a property-based fuzz of the
schema (hypothesis) so that the next edge is found by a test, not by a user."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from study.cli import main
from study.spec import (MAX_FILE_BYTES, MAX_TRIALS, PRESETS_DIR, StudyError, StudySpec,
                        load_yaml, load_study, parse_study)

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # not .hypothesis/ in the shared tree
    set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "lipstudy-hypothesis"))

TOY = "fixed: {dataset: ring8, arch: mlp, iterations: 10, eval_every: 5}\n"


def bomb(levels: int = 9) -> str:
    """The billion laughs: 9 aliases of 9 aliases of ... (9**levels leaves once expanded)."""
    lines = ["  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "points_to_evaluate:\n" + "\n".join(lines) + "\n"


# (file text, what the one line must contain)
HOSTILE = {
    # a key repeated in one mapping: PyYAML would keep the last value without a word
    "dup-top-level": ("name: t\nseeds: 3\n" + TOY + "seeds: 5\n",
                      "line 4: key 'seeds' repeated in one mapping (first at line 2)"),
    "dup-in-fixed-block": ("name: t\nfixed:\n  k_sn: 1.0\n  loss: ns\n  k_sn: 50.0\n",
                           "line 5 (fixed): key 'k_sn' repeated"),
    "dup-in-flow-grid": ("name: t\n" + TOY + "grid: {loss: [ns], loss: [wgan]}\n",
                         "line 3 (grid): key 'loss' repeated"),
    "dup-in-grid-block": ("name: t\n" + TOY + "grid:\n  - {k_sn: [1.0]}\n  - {loss: [ns], loss: [ls]}\n",
                          "(grid[1]): key 'loss' repeated"),
    "dup-space-entry": ("name: t\nsearch: optuna\nspace:\n  alpha: {loguniform: [1, 2]}\n"
                        "  alpha: {loguniform: [3, 4]}\n", "(space): key 'alpha' repeated"),
    "dup-1-and-1.0": ("name: t\nresources: {custom: {1: 1, 1.0: 2}}\n", "key '1.0' repeated"),
    # YAML 1.1 booleans where a number (or a word) is meant
    "k_sn-yes": ("name: t\nfixed: {k_sn: yes}\n", "fixed.k_sn: got true, a YAML boolean"),
    "k_sn-yes-in-grid": ("name: t\ngrid: {k_sn: [1.0, yes]}\n", "grid.k_sn: got true"),
    "seeds-on": ("name: t\nseeds: on\n", "seeds: got true, a YAML boolean"),
    "seeds-list-off": ("name: t\nseeds: [0, off]\n", "seeds: got false"),
    "loss-no": ("name: t\nfixed: {loss: no}\n", "fixed.loss: got false, a YAML boolean"),
    "loss-no-in-grid-block": ("name: t\ngrid: [{loss: [ns]}, {loss: [no]}]\n", "grid[1].loss: got false"),
    "iterations-true": ("name: t\nfixed: {iterations: true}\n", "fixed.iterations: got true"),
    "num_samples-yes": ("name: t\nsearch: optuna\nspace: {alpha: {loguniform: [1, 2]}}\n"
                        "num_samples: yes\n", "num_samples: got true"),
    "uniform-bound-on": ("name: t\nsearch: optuna\nspace: {k_sn: {uniform: [on, 2]}}\n",
                         "space.k_sn.uniform[0]: got true"),
    "choice-off": ("name: t\nsearch: optuna\nspace: {k_sn: {choice: [1.0, off]}}\n",
                   "space.k_sn.choice: got false"),
    "when-no": ("name: t\nsearch: optuna\nspace: {regularizer: {choice: [sn, none]},"
                " k_sn: {uniform: [1, 2], when: {regularizer: no}}}\n",
                "space.k_sn.when.regularizer: got false"),
    "point-yes": ("name: t\nsearch: optuna\nspace: {k_sn: {uniform: [1, 2]}}\n"
                  "points_to_evaluate: [{k_sn: yes}]\n", "points_to_evaluate[0].k_sn: got true"),
    "gpu-yes": ("name: t\nresources: {gpu: yes}\n", "resources.gpu: got true"),
    "cpu-on": ("name: t\nresources: {cpu: on}\n", "resources.cpu: got true"),
    "max_failures-no": ("name: t\nmax_failures: no\n", "max_failures: got false"),
    "name-no": ("name: no\n", "name: Input should be a valid string (got false, a YAML boolean"),
    # absurd sizes: refused from the list lengths, before anything is expanded
    "seeds-1e11": ("name: t\nseeds: 100000000000\n",
                   "seeds: 100,000,000,000 replicates per configuration; a study runs at most"),
    "seeds-list-too-long": ("name: t\nseeds: [" + ", ".join(map(str, range(MAX_TRIALS + 1))) + "]\n",
                            "seeds: 10,001 seeds"),
    "seed-beyond-numpy": ("name: t\nseeds: [4294967296]\n", "seeds: seed 4294967296 is beyond"),
    "sampler_seed-huge": ("name: t\nsampler_seed: 100000000000\n", "sampler_seed:"),
    "grid-1e12": ("name: t\ngrid:\n" + "".join(
        f"  {k}: [{', '.join(['1.0'] * 1000)}]\n" for k in ("k_sn", "alpha", "lr_d", "lr_g")),
        "grid: 1,000 k_sn x 1,000 alpha x 1,000 lr_d x 1,000 lr_g = 1,000,000,000,000 configurations"),
    "grid-block-times-seeds": ("name: t\nseeds: 3\ngrid:\n  - {loss: [ns]}\n  - {k_sn: ["
                               + ", ".join(["1.0"] * 4000) + "]}\n",
                               "grid[1]: 4,000 k_sn = 4,000 configurations x 3 seeds = 12,000 trials"),
    "grid-blocks-sum": ("name: t\ngrid:\n" + "".join(
        f"  - {{k_sn: [{', '.join(['1.0'] * 4000)}]}}\n" for _ in range(3)),
        "grid: its 3 blocks make 12,000 trials"),
    "num_samples-1e9": ("name: t\nsearch: optuna\nspace: {alpha: {loguniform: [1, 2]}}\n"
                        "num_samples: 1000000000\n", "num_samples: 1,000,000,000 trials"),
    "num_samples-times-seeds": ("name: t\nsearch: random\nspace: {alpha: {loguniform: [1, 2]}}\n"
                                "num_samples: 5000\nseeds: 3\n", "num_samples: 5,000 x 3 seeds"),
    "space-combinations": ("name: t\nsearch: optuna\nspace:\n" + "".join(
        f"  {k}: {{choice: [{', '.join(['1.0'] * 100)}]}}\n" for k in ("alpha", "lr_d", "lr_g")),
        "space.lr_g: the choices up to here combine into 1,000,000 configurations"),
    "int-5000-digits": ("name: t\nfixed: {iterations: " + "9" * 5000 + "}\n",
                        "line 2 (fixed.iterations): integer 99999999999999999999... is too large"),
    "hex-int-huge": ("name: t\nfixed: {iterations: 0x" + "f" * 30 + "}\n",
                     "(fixed.iterations): integer"),
    "int-bounds-huge": ("name: t\nsearch: optuna\nspace: {n_dis: {int: [1, '" + "9" * 30 + "']}}\n",
                        "space.n_dis: int bounds beyond"),
    "cpu-infinite": ("name: t\nresources: {cpu: 1e400}\n", "resources.cpu: must be a finite number"),
    "asha-factor-inf": ("name: t\nasha: {reduction_factor: .inf}\n", "asha.reduction_factor"),
    "too-large-file": ("name: t\ndescription: '" + "x" * MAX_FILE_BYTES + "'\n",
                       f"larger than {MAX_FILE_BYTES:,} bytes"),
    # alias bombs and recursion; deep nesting
    "billion-laughs": ("name: t\nsearch: optuna\nspace: {alpha: {loguniform: [1, 2]}}\n" + bomb(),
                       "expands to more than 1,000,000 nodes and characters"),
    "bomb-of-a-long-string": ("name: t\ndescription: &s '" + "x" * 100_000 + "'\nhypotheses: ["
                              + ", ".join(["*s"] * 20) + "]\n", "expands to more than"),
    "recursive-alias": ("name: t\nfixed: &r {loss: [*r]}\n",
                        "line 2 (fixed.loss): alias *r refers to the anchor that contains it"),
    "recursive-merge": ("name: t\nfixed: &r {<<: *r}\n", "alias *r refers to the anchor"),
    "deep-flow-nesting": ("name: t\ndescription: " + "[" * 5000 + "]" * 5000 + "\n",
                          "nested deeper than 32 levels"),
    "deep-block-nesting": ("name: t\nfixed:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(60))
                           + "  " * 61 + "x\n", "(fixed.k0.k1.k2"),
    # other things that used to be tracebacks
    "unhashable-dataset": ("name: t\nfixed: {dataset: [a]}\n", "fixed.dataset: Input should be a valid string"),
    "bad-timestamp": ("name: t\ndescription: !!timestamp 2024-13-45\n",
                      "not valid YAML at line 2: cannot read this value (month must be in 1..12)"),
    "key-with-newline": ('name: t\nfixed: {"k_sn\\nloss": 1}\n', "fixed.k_sn\\nloss: unknown trial key"),
    "key-with-escape": ('name: t\nfixed: {"\\e[2J": 1}\n', "fixed.\\x1b[2J: unknown trial key"),
    "key-with-line-separator": ('name: t\n"\\u2028": 1\n', "\\u2028: unknown key"),
    "non-string-top-key": ("name: t\n3: 4\n", "3: key 3 is not a string"),
    "null-top-key": ("name: t\n~: 4\n", "None: key None is not a string"),
    "two-documents": ("name: t\n---\nname: u\n", "not valid YAML at line 2"),
    "nul-character": ("name: t\x00\n", "not valid YAML"),
}

#: where the danger is memory (a bomb, a count that used to be expanded): peak traced < 64 MiB
MEMORY_CASES = {"seeds-1e11", "grid-1e12", "num_samples-1e9", "space-combinations",
                "int-5000-digits", "billion-laughs", "bomb-of-a-long-string", "recursive-alias",
                "recursive-merge", "deep-flow-nesting", "deep-block-nesting"}


def _one_line_and_exit_2(path, expected, capsys):
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert expected in msg and len(msg.splitlines()) == 1, msg
    assert main(["validate", str(path)]) == 2
    out, errout = capsys.readouterr()
    assert errout.count("\n") == 1 and len(errout.splitlines()) == 1 and expected in errout, errout
    assert "Traceback" not in errout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_one_clean_line_and_exit_2(tmp_path, case, capsys):
    text, expected = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    if case not in MEMORY_CASES:
        _one_line_and_exit_2(path, expected, capsys)
        return
    tracemalloc.start()  # (it slows allocation ~10x: only where memory is the point)
    try:
        _one_line_and_exit_2(path, expected, capsys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{case}: {peak / 2**20:.0f} MiB"


def test_a_key_repeated_in_the_cli_run_exits_2_before_anything(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\n" + TOY + "grid: {k_sn: [1.0]}\ngrid: {k_sn: [2.0]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path)]) == 2
    assert "key 'grid' repeated" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]


@pytest.mark.parametrize("name, content, expected", [
    ("binary.yaml", b"name: t\n\xff\xfe\n", "not UTF-8 text (byte 0xff at offset 8)"),
    ("huge.yaml", b"#" * (MAX_FILE_BYTES + 10), f"larger than {MAX_FILE_BYTES:,} bytes"),
])
def test_odd_bytes_and_huge_files(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    _one_line_and_exit_2(path, expected, capsys)


def test_unreadable_names_are_one_line(capsys):
    for source in ["x" * 5000, "a\x00b.yaml", "/" + "y" * 5000 + ".yaml"]:
        with pytest.raises(StudyError) as err:
            load_study(source)
        assert len(str(err.value).splitlines()) == 1 and len(str(err.value)) <= 2000
    assert main(["validate", "x" * 5000]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_what_stays_valid():
    """Merge keys may override merged keys; dates stay strings; the booleans of true/false keys
    (d_bias, download, fid_inf) still read yes/no; a grid of exactly MAX_TRIALS is fine."""
    spec = parse_study("name: 2024-01-01\nfixed: {<<: {k_sn: 2.0, loss: ns}, k_sn: 3.0, d_bias: no,"
                       " dataset: ring8, arch: mlp, iterations: 10, eval_every: 5}\n")
    assert spec.name == "2024-01-01" and spec.fixed["k_sn"] == 3.0 and spec.fixed["d_bias"] is False
    k = ", ".join(str(1 + i / 1000) for i in range(MAX_TRIALS // 2))
    spec = parse_study(f"name: t\n{TOY}grid: {{k_sn: [{k}]}}\nseeds: 2\n")
    assert spec.n_seeds * len(spec.grid["k_sn"]) == MAX_TRIALS


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS_DIR.glob("*.yaml")))
def test_presets_read_exactly_as_safe_load(preset):
    """The stricter loader changes nothing for the shipped presets (anchors, merge keys)."""
    text = (PRESETS_DIR / preset).read_text()
    assert load_yaml(text, preset) == yaml.safe_load(text)


# --- property-based fuzz of the schema ----------------------------------------------------------

BASES = [
    {"name": "grid-toy", "fixed": {"dataset": "ring8", "arch": "mlp", "iterations": 10,
                                   "eval_every": 5},
     "grid": {"loss": ["ns", "wgan"], "k_sn": [0.5, 10.0]}, "seeds": 2},
    {"name": "grid-blocks", "description": "conditional grid",
     "fixed": {"iterations": 10, "eval_every": 5, "width": 0.125},
     "grid": [{"regularizer": ["sn"], "k_sn": [1.0, 5.0]}, {"regularizer": ["gp"], "k_gp": [1.0]}],
     "seeds": [0, 3], "resources": {"cpu": 1, "gpu": "auto", "custom": {}}},
    {"name": "optuna", "search": "optuna", "hypotheses": ["H1", "domain"],
     "fixed": {"dataset": "ring8", "arch": "mlp", "iterations": 10, "eval_every": 5},
     "space": {"loss": {"choice": ["ns", "ls"]}, "regularizer": {"choice": ["sn", "none"]},
               "k_sn": {"loguniform": [0.1, 100], "when": {"regularizer": "sn"}},
               "n_dis": {"int": [1, 3]}, "alpha": {"uniform": [0.5, 2.0]}},
     "points_to_evaluate": [{"loss": "ns", "regularizer": "sn", "k_sn": 1.0, "n_dis": 1,
                             "alpha": 1.0}],
     "num_samples": 4, "sampler": "tpe", "sampler_seed": 1, "scheduler": "asha",
     "asha": {"grace_period": 1, "reduction_factor": 3}, "max_concurrent": 2},
    {"name": "random", "search": "random", "space": {"eps": {"loguniform": [1e-8, 1e-2]}},
     "fixed": {"iterations": 10, "eval_every": 5, "optimizer": "adam", "beta1": 0.5},
     "num_samples": 3, "max_failures": 0, "checkpoints_to_keep": 1, "storage_path": "./r",
     "tracking_uri": None, "optuna_storage": None},
]
for base in BASES:  # the fuzz starts from valid studies
    parse_study(yaml.safe_dump(base, sort_keys=False))

WORDS = sorted({*StudySpec.model_fields, "choice", "uniform", "loguniform", "int", "when", "cpu",
                "gpu", "custom", "grace_period", "reduction_factor", "loss", "k_sn", "k_gp",
                "regularizer", "dataset", "arch", "seed", "iterations", "eval_every", "alpha",
                "eps", "beta1", "optimizer", "d_bias", "resolution", "ns", "wgan", "sn", "gp",
                "none", "ring8", "mlp", "dcgan32", "auto", "grid", "optuna", "random", "asha"})
# unquoted YAML that a careless or hostile hand writes (put in place of a value after dumping)
RAW = ["yes", "no", "on", "off", "~", "null", "y", "1e5", "1.0e400", "-.inf", ".nan", "0x1F",
       "0o17", "0b101", "1_000", "1:30", "2024-01-01", "2024-13-45", "!!timestamp 2024-13-45",
       "!!binary aGk=", "!!binary '#'", "!!float x", "!!int 1.5", "!!python/object:os.system x",
       "!!set {a, b}", "!!omap [a: 1]", "*nowhere", "&a [*a]", "&b {x: 1}", "=", "[1, 2",
       "{a: 1, a: 2}", "'quoted'", '"\\u2028\\n\\x00"', "9" * 60, "0x" + "f" * 60, "-" + "9" * 19,
       "[" * 80 + "]" * 80, "[" * 1000 + "]" * 1000, "{<<: [1]}", "{<<: {k_sn: 2}, k_sn: 3}", "|\n  two\n  lines",
       "@reserved", "`tick", "%x", "? [1]\n: 2", "\t", "- a\n- b"]

keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.integers(-3, 3), st.none())
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2**80, 2**80),
    st.sampled_from([0, 1, 2, 10**11, 10**12, 2**32, 2**63 - 1, 2**63, 2**64, -1, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(WORDS))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
extremes = st.sampled_from([10**11, 10**12, 2**63, 10**300, -10**11, 1e308, float("inf"),
                            float("nan"), True, False, None, "", [], {}, [True], [10**11],
                            [0] * 5000])


def _paths(obj, prefix=()):
    """Every (container path, key or index) in a study."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def mutated_studies(draw):
    """YAML text: a valid study after 1-4 random mutations (structural, then textual)."""
    study = copy.deepcopy(draw(st.sampled_from(BASES)))
    raw: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(study)
        op = draw(st.sampled_from(["drop", "retype", "retype", "add", "rename", "raw", "wrap",
                                   "deep", "bool", "huge", "top"]))
        if not paths:
            op = "add"
        path = draw(st.sampled_from(paths)) if paths else ()
        parent = _get(study, path[:-1]) if path else study
        last = path[-1] if path else None
        if op == "drop":
            del parent[last]
        elif op == "retype":
            parent[last] = draw(values)
        elif op == "bool":
            parent[last] = draw(st.booleans())
        elif op == "huge":
            parent[last] = copy.deepcopy(draw(extremes))  # (mutated later: never the sample itself)
        elif op == "top":  # a study key (present or not) set to an extreme or random value
            key = draw(st.sampled_from(sorted(StudySpec.model_fields)))
            study[key] = copy.deepcopy(draw(extremes | values))
        elif op == "add":
            target = draw(st.sampled_from([study] + [_get(study, p) for p in paths
                                                     if isinstance(_get(study, p), dict)]))
            target[draw(keys)] = draw(values)
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
        elif op == "raw":
            token = f"RAWTOKEN{len(raw)}"
            raw[token] = draw(st.sampled_from(RAW))
            parent[last] = token
        elif op == "wrap":
            parent[last] = [parent[last]] if draw(st.booleans()) else {draw(keys): parent[last]}
        elif op == "deep":
            value = parent[last]
            for _ in range(draw(st.integers(1, 40))):
                value = [value] if draw(st.booleans()) else {"k": value}
            parent[last] = value
    try:
        text = yaml.safe_dump(study, default_flow_style=draw(st.sampled_from([False, None, True])),
                              allow_unicode=draw(st.booleans()), sort_keys=False, width=10**6)
    except RecursionError:  # PyYAML's representer recurses; deep files come from RAW as text
        reject()
    for token, value in raw.items():
        text = text.replace(token, value)
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 2))):  # textual: repeat a line (a repeated key), cut
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if lines and draw(st.booleans()):
            lines.insert(i, lines[i])
        elif lines:
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
    return "".join(lines)


FUZZ = settings(max_examples=800, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.timeout(60)
@FUZZ
@given(mutated_studies())
def test_fuzz_parse_study_is_valid_or_one_clean_line(text):
    try:
        parse_study(text)
    except StudyError as err:
        msg = str(err)
        assert msg and len(msg.splitlines()) == 1 and msg.isprintable(), repr(msg)


@pytest.mark.timeout(60)
@settings(FUZZ, max_examples=40)
@given(mutated_studies())
def test_fuzz_cli_validate_exits_0_or_2_with_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "study.yaml")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["validate", path])
    assert code in (0, 2)
    assert (err.getvalue() == "") == (code == 0), err.getvalue()
    if code == 2:
        assert err.getvalue().count("\n") == 1 and len(err.getvalue().splitlines()) == 1
