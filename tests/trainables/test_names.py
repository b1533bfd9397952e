"""One home for every name (issue #11): the trial schema and the analysis agree on the params and
their types, and the names module loads without torch, Ray or MLflow."""

from __future__ import annotations

import subprocess
import sys
import typing

from trainables import names
from trainables.config import BASE_KEYS, BaseTrial, OPTIMIZER_KEYS
from trainables.gan.regularizers import REGULARIZERS


def _base_type(annotation) -> type:
    """int for ``int | None``, str for ``Literal["a", "b"]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0])
    if args:
        return _base_type(args[0])
    return annotation


def test_trial_param_types_are_the_trial_schema():
    schema: dict[str, type] = {k: _base_type(BaseTrial.model_fields[k].annotation) for k in BASE_KEYS}
    for reg in REGULARIZERS.values():
        for key, field in reg.Params.model_fields.items():
            schema[key] = _base_type(field.annotation)
    for keys in OPTIMIZER_KEYS.values():
        schema.update({k: type(v) for k, v in keys.items()})
    assert names.TRIAL_PARAM_TYPES == schema


def test_analysis_types_every_trial_key_and_metric_from_the_same_home():
    from analysis.load import METRICS, PARAM_TYPES

    for key, typ in {**names.TRIAL_PARAM_TYPES, **names.DERIVED_PARAM_TYPES}.items():
        assert PARAM_TYPES[key] is typ
    assert PARAM_TYPES["fid_final_samples"] is int and PARAM_TYPES["fid_inf"] is bool
    assert METRICS is names.METRICS


def test_names_module_imports_nothing_heavy():
    code = ("import sys; import trainables.names; "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
