"""cluster.yaml is a Ray cluster launcher config that Ray itself accepts: its JSON schema shipped
in the ray package, then Ray's own offline preparation/validation. Plus the project's rules: CPU
head, spot GPU workers with an on-demand fallback type, S3 storage, and closed by default (Ray's
token auth on every node, no secret in the file, MLflow on loopback behind basic auth and a
systemd service, an explicit security group, the docs it cites present)."""

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


def _code(text: str) -> list[str]:
    """The file's lines without comments (what Ray runs)."""
    return [line.split("#")[0] for line in text.splitlines()]


def test_s3_storage_and_the_dashboard_on_loopback(config):
    head_cmds = " ".join(config["head_start_ray_commands"] + config["head_setup_commands"])
    assert "--artifacts-destination s3://" in head_cmds
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert not any("0.0.0.0" in line for line in _code((ROOT / "cluster.yaml").read_text()))


def test_ray_token_auth_on_every_node(config):
    """Every ``ray start`` (head and workers) runs with RAY_AUTH_MODE=token; the token reaches
    every node through file_mounts at ~/.ray/auth_token; nothing turns auth off."""
    text = (ROOT / "cluster.yaml").read_text()
    assert "RAY_AUTH_MODE=disabled" not in " ".join(_code(text))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, key
        token_start = r"RAY_AUTH_MODE=token\s+(\S+=\S+\s+)*ray start"
        assert all(re.search(token_start, c) for c in starts), key
    assert config["file_mounts"].get("~/.ray/auth_token", "").startswith("~/")  # from your machine


def test_no_secret_in_the_file(config):
    """Credentials come from files outside the repository (file_mounts), never literals."""
    text = " ".join(_code((ROOT / "cluster.yaml").read_text()))
    for pattern in (r"PASSWORD=(?!\$)\S", r"password\s*[:=]\s*\w", r"RAY_AUTH_TOKEN=\S",
                    r"admin_password", r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key"):
        assert not re.search(pattern, text, re.IGNORECASE), pattern
    for local in config["file_mounts"].values():
        if local != ".":
            assert local.startswith("~/") and not (ROOT / local).exists(), local


def test_mlflow_is_a_restarting_service_on_loopback_behind_basic_auth(config):
    setup = " ".join(config["head_setup_commands"])
    start = " ".join(config["head_start_ray_commands"])
    assert "nohup" not in setup + start  # a service, not a background process
    server = re.search(r"-m mlflow server (.*?)\"", setup).group(1)
    assert "--app-name basic-auth" in server and "--host 127.0.0.1" in server
    assert "Restart=always" in setup and "WantedBy=multi-user.target" in setup
    assert "systemctl daemon-reload && sudo systemctl enable --now mlflow.service" in setup
    assert "default_permission = NO_PERMISSIONS" in setup
    # the workers' way in: a proxy on the private IP only, to the loopback server
    assert re.search(r"ListenStream=\$\(hostname -I \| cut -d' ' -f1\):5000", setup)
    assert "systemd-socket-proxyd 127.0.0.1:5000" in setup
    # every Ray process (driver, trials) gets the MLflow credentials from the shipped file
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all(". ~/.lipstudy/mlflow.env" in c for c in config[key] if "ray start" in c)


def test_explicit_security_group_on_every_node_type(config):
    """Ray's own default group opens SSH to 0.0.0.0/0; naming a group on every node type stops
    the launcher from creating it. The docs create that group: SSH from the user's CIDR, the rest
    only from the group itself."""
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"].get("SecurityGroupIds"), name
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert re.search(r"authorize-security-group-ingress .*--port 22 --cidr \"\$MY_CIDR\"", doc)
    assert re.search(r"authorize-security-group-ingress .*--protocol -1 --source-group", doc)
    assert "MY_CIDR=" in doc and "FILL-IN" in doc.split("MY_CIDR=")[1].splitlines()[0]


def test_spot_workers_with_an_on_demand_fallback(config):
    types = config["available_node_types"]
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    spot = [n for n, t in gpu.items() if "InstanceMarketOptions" in t["node_config"]]
    ondemand = [n for n, t in gpu.items() if "InstanceMarketOptions" not in t["node_config"]]
    assert spot and ondemand
    assert all(types[s]["priority"] > types[o]["priority"] for s in spot for o in ondemand)
    assert all(types[s]["resources"] == types[o]["resources"] for s in spot for o in ondemand)
    assert "RAY_enable_autoscaler_v2=1" in " ".join(config["head_start_ray_commands"])


def test_every_file_the_config_cites_exists():
    text = (ROOT / "cluster.yaml").read_text()
    cited = set(re.findall(r"\b((?:docs|study|trainables|bench|tests)/[\w./-]+\.(?:md|py))", text))
    assert "docs/cluster.md" in cited
    missing = [p for p in sorted(cited) if not (ROOT / p).exists()]
    assert not missing, missing
    doc = (ROOT / "docs" / "cluster.md").read_text()
    for heading in ("## Secrets", "## Security group", "## What is open to whom",
                    "## Run on a cluster", "## Spot workers and failures"):
        assert heading in doc, heading


def test_cluster_docs_have_the_exact_commands():
    doc = (ROOT / "README.md").read_text()
    for cmd in ("ray up cluster.yaml", "ray job submit", "lipstudy run", "lipstudy resume",
                "ray down cluster.yaml", "port-forward", "optuna-dashboard"):
        assert cmd in doc, cmd
