"""cluster.yaml is a Ray cluster launcher config that Ray itself accepts: its JSON schema shipped
in the ray package, then Ray's own offline preparation/validation. Plus the project's rules: CPU
head, GPU worker type with min/max workers, MLflow server on the private interface, S3 storage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(config):
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def test_cluster_yaml_passes_rays_own_config_checks(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(json.loads(json.dumps(config)))
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_cpu_head_gpu_workers_and_setup(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    gpu = [t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(0 <= t["min_workers"] <= t["max_workers"] for t in gpu)
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "-e" in setup and "ray[" in setup
    assert config["file_mounts"]  # the project is shipped to every node


def test_mlflow_server_on_private_interface_and_s3_storage(config):
    head_cmds = " ".join(config["head_start_ray_commands"])
    assert "mlflow server" in head_cmds
    assert re.search(r"mlflow server\s+--host \$\(hostname -I", head_cmds)
    code = [line.split("#")[0] for line in (ROOT / "cluster.yaml").read_text().splitlines()]
    assert not any("0.0.0.0" in line for line in code)  # nothing bound to every interface
    assert "hostname -I" in head_cmds  # the head's private address
    assert "--artifacts-destination s3://" in head_cmds
    assert "--dashboard-host=127.0.0.1" in head_cmds


def test_cluster_docs_have_the_exact_commands():
    doc = (ROOT / "README.md").read_text()
    for cmd in ("ray up cluster.yaml", "ray job submit", "lipstudy run", "lipstudy resume",
                "ray down cluster.yaml", "port-forward", "optuna-dashboard"):
        assert cmd in doc, cmd
