"""A Ray head with a real autoscaler on this machine: ``ray start --head --autoscaling-config``
with Ray's ``fake_multinode`` provider, which starts each node the autoscaler launches as another
raylet here, with the resources its node type declares (fake GPUs: Ray schedules on them, there
is no CUDA behind them). ``ray.cluster_utils.AutoscalingCluster`` does the same but runs
``ray stop --force`` (every Ray on the machine) and needs a file Ray 2.60's wheel does not ship;
this one uses its own ports and temp dir and is stopped by PID."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.study._procs import family, kill_pids, processes_naming, ray_tmpdir


# Token auth, as every local Ray of this test session (ray.init turns it on for its process; a
# driver in token mode joining a head with auth off had its actors cancelled). The head, the nodes
# its autoscaler starts and the joining driver all read ~/.ray/auth_token.
AUTH_ENV = {"RAY_AUTH_MODE": "token"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AutoscalingHead:
    address: str
    config_path: Path
    temp_dir: str

    def stop(self) -> None:
        pids: set[int] = set()
        for pid in processes_naming(self.temp_dir):
            pids |= family(pid)
        kill_pids(pids)


def launcher_config(port: int, worker_types: dict, head_resources: dict) -> dict:
    """A cluster launcher config for the fake provider (the fields the monitor reads)."""
    return {
        "cluster_name": "lipstudy-fake", "max_workers": 4, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            # the name the fake provider tags its head with (FAKE_HEAD_NODE_TYPE): another name
            # makes the autoscaler count the head as a worker and terminate the GPU node
            "ray.head.default": {"resources": head_resources, "node_config": {},
                                 "max_workers": 0},
            **worker_types},
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def start_autoscaling_head(config_dir: Path, worker_types: dict, head_cpus: int = 1
                           ) -> AutoscalingHead:
    port = free_port()
    temp_dir = ray_tmpdir()
    config_path = config_dir / "ray_bootstrap_config.yaml"
    config_path.write_text(json.dumps(launcher_config(port, worker_types, {"CPU": head_cpus})))
    env = {**os.environ, **AUTH_ENV, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = AutoscalingHead(f"127.0.0.1:{port}", config_path, temp_dir)
    try:
        done = subprocess.run(
            [ray_cli, "start", "--head", f"--port={port}", f"--autoscaling-config={config_path}",
             f"--temp-dir={temp_dir}", f"--num-cpus={head_cpus}", "--num-gpus=0",
             "--include-dashboard=false", f"--dashboard-port={free_port()}",
             "--dashboard-agent-listen-port=0",
             "--disable-usage-stats"],
            env=env, timeout=180, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"ray start --head failed: {(done.stdout + done.stderr)[-2000:]}")
    except BaseException:
        head.stop()
        raise
    return head
