"""What the Ray cluster a study runs on has, and can have, checked before anything starts.

A study asks two questions of its cluster before its parent MLflow run opens:

* **How many GPUs can a trial get?** (``resources: {gpu: auto}``). Live nodes are not the answer
  on an autoscaling cluster: with ``min_workers: 0`` (``cluster.yaml``) GPU workers exist only once
  something asks for a GPU, so ``ray.cluster_resources()`` at start shows none, and trials that
  ask for none land on the GPU nodes the autoscaler starts for their CPU demand and train on CPU.
  The answer is the live GPUs plus the GPUs of the node types the autoscaler may start.
* **Does every trial see this machine's files?** With more than one node (live, or declared by the
  autoscaler), a local storage path or a local tracking store (SQLite, a file store) is written by
  each node into its own disk: Ray fails at the first checkpoint sync and each worker logs into
  its own empty database. Refused unless the user marks the local file system as shared by every
  node (one machine, an NFS mount): ``--shared-fs`` / ``LIPSTUDY_SHARED_FS=1``.

The autoscaler's node types come from, in order: the cluster config Ray's GCS holds
(``ray._private.state.state.get_cluster_config()``, reported by KubeRay / autoscaler v2), the file
named by ``$LIPSTUDY_AUTOSCALING_CONFIG``, or ``~/ray_bootstrap_config.yaml`` (where ``ray up``
puts the config on the head, the one ``ray start --autoscaling-config`` reads). A Ray started by
this driver (``address: local``) has no autoscaler: its live nodes are the whole story. A joined
cluster with no GPU now and no readable node types is refused with one line saying what to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from study.limits import one_line
from study.spec import StudyError, StudySpec

AUTO_GPU_SHARE = 0.25  # one-config trials per GPU under gpu: auto: four share one GPU
SHARED_FS_ENV = "LIPSTUDY_SHARED_FS"
AUTOSCALING_CONFIG_ENV = "LIPSTUDY_AUTOSCALING_CONFIG"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


class ClusterError(StudyError):
    """What the cluster refuses, one line per problem (``str(err)``: the lines joined by newlines;
    the CLI prints each as its own ``lipstudy: error:`` line)."""

    def __init__(self, problems: list[str]):
        self.problems = [one_line(p) for p in problems]
        ValueError.__init__(self, "\n".join(self.problems))


@dataclass(frozen=True)
class NodeType:
    """A worker node type the autoscaler may start: its resources and how many of it."""

    name: str
    resources: dict[str, float]
    max_workers: int


@dataclass(frozen=True)
class ClusterView:
    """The cluster as the driver sees it before a study starts.

    ``declared`` is None when the autoscaler's node types could not be read (or there is no
    autoscaler to ask: ``started_here``)."""

    live_nodes: int
    live_gpus: float
    started_here: bool  # a local Ray this driver started: no autoscaler, live is everything
    declared: tuple[NodeType, ...] | None = None
    source: str | None = None
    live: tuple[dict[str, float], ...] = ()  # each live node's total resources (Ray's names)

    @property
    def declared_gpus(self) -> float:
        return sum(t.resources.get("GPU", 0) * t.max_workers for t in self.declared or ())

    @property
    def gpus(self) -> float:
        """GPUs a trial may get: live ones plus those the autoscaler can start."""
        return self.live_gpus + self.declared_gpus

    @property
    def gpus_known(self) -> bool:
        return self.started_here or self.live_gpus > 0 or self.declared is not None

    @property
    def multi_node(self) -> bool:
        return self.live_nodes > 1 or any(t.max_workers > 0 for t in self.declared or ())


def node_types_from_config(config: dict) -> tuple[NodeType, ...]:
    """The worker node types of a cluster launcher config (``available_node_types`` minus the
    head type), each capped by the config's global ``max_workers``."""
    cap = int(config.get("max_workers", 2**31))
    head = config.get("head_node_type")
    return tuple(
        NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                 min(int(t.get("max_workers", cap)), cap))
        for name, t in (config.get("available_node_types") or {}).items() if name != head)


def _gcs_node_types() -> tuple[NodeType, ...] | None:
    """Node groups from the cluster config in Ray's GCS, when an autoscaler reported one."""
    try:
        import ray._private.state as ray_state

        config = ray_state.state.get_cluster_config()
    except Exception:  # an older/newer Ray without it: the file sources remain
        return None
    if config is None or not config.node_group_configs:
        return None
    return tuple(NodeType(g.name, {k: float(v) for k, v in g.resources.items()},
                          2**31 if g.max_count < 0 else int(g.max_count))
                 for g in config.node_group_configs)


def declared_node_types() -> tuple[tuple[NodeType, ...] | None, str | None]:
    """The autoscaler's worker node types and where they were read, or (None, None)."""
    found = _gcs_node_types()
    if found is not None:
        return found, "Ray's GCS cluster config"
    path = Path(os.path.expanduser(os.environ.get(AUTOSCALING_CONFIG_ENV) or BOOTSTRAP_CONFIG))
    if not path.is_file():
        return None, None
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise StudyError(f"{path}: cannot read the autoscaler's config ({err})") from None
    if not isinstance(config, dict):
        raise StudyError(f"{path}: not a Ray cluster config (a YAML mapping)")
    return node_types_from_config(config), str(path)


def _started_here() -> bool:
    """True when this driver started its Ray (``ray.init(address="local")``), not joined one."""
    try:
        import ray._private.worker as worker

        return bool(getattr(worker._global_node, "head", False))
    except Exception:
        return False


def read_cluster() -> ClusterView:
    """The :class:`ClusterView` of the Ray this process is connected to (after ``ray.init``)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    live_gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
    here = _started_here()
    declared, source = (None, None) if here else declared_node_types()
    live = tuple({k: float(v) for k, v in (n.get("Resources") or {}).items()} for n in nodes)
    return ClusterView(len(nodes), live_gpus, here, declared, source, live)


def shared_fs_default() -> bool:
    return os.environ.get(SHARED_FS_ENV, "").strip().lower() in ("1", "true", "yes")


def is_local_uri(uri: str) -> bool:
    """A path on this machine's disk: a plain path or ``file://`` (storage), ``sqlite:`` or a file
    store (tracking)."""
    return "://" not in uri or uri.startswith(("file:", "sqlite:"))


def multi_node_problems(view: ClusterView, storage: str, tracking_uri: str,
                        shared_fs: bool) -> list[str]:
    """One line per local location that nodes other than this one cannot see."""
    if not view.multi_node or shared_fs:
        return []
    nodes = (f"{view.live_nodes} live node(s)"
             + (f", more the autoscaler can start ({view.source})" if view.declared else ""))
    hint = f"(or, if every node mounts it at the same path, pass --shared-fs / {SHARED_FS_ENV}=1)"
    problems = []
    if is_local_uri(storage):
        problems.append(f"storage_path {storage} is on this machine's disk, but this cluster has "
                        f"{nodes}: give --storage-path s3://... or gs://... {hint}")
    if is_local_uri(tracking_uri):
        problems.append(f"tracking_uri {tracking_uri} is a local store, but this cluster has "
                        f"{nodes}: give --tracking-uri http://<head>:5000 (docs/cluster.md) {hint}")
    return problems


def gpu_plan(spec: StudySpec, view: ClusterView) -> tuple[float, str | None]:
    """The GPU share per trial and a line saying what ``gpu: auto`` decided (None when the study
    sets its share). ``auto``: a whole GPU per population pack, a quarter per one-config trial
    (these models are small and launch-latency bound) when the cluster has or can have GPUs;
    none otherwise. Raises :class:`StudyError` when that cannot be known."""
    if spec.resources.gpu != "auto":
        return float(spec.resources.gpu), None
    if not view.gpus_known:
        raise StudyError(
            f"gpu: auto: this Ray cluster has no GPU now and its autoscaler's node types cannot be "
            f"read (no {BOOTSTRAP_CONFIG} here; {AUTOSCALING_CONFIG_ENV}=<cluster yaml> names "
            "one): set resources: {gpu: 0.25} (or gpu: 0 for CPU trials) in the study file")
    if view.gpus <= 0:
        return 0.0, ("gpu: auto: no GPU on this cluster (none live, none an autoscaler can "
                     "start): trials run on CPU")
    share = 1.0 if spec.population > 1 else AUTO_GPU_SHARE
    where = f"{view.live_gpus:g} live" + (f", {view.declared_gpus:g} the autoscaler can start"
                                           if view.declared_gpus else "")
    return share, f"gpu: auto: {share:g} GPU per trial (GPUs: {where})"


def gpu_share(spec: StudySpec) -> float:
    """The GPU share per trial (:func:`gpu_plan`). A study that went through
    ``study.placement.prepare_cluster`` carries its share as a number; ``auto`` is resolved here
    from the cluster (live GPUs and the GPUs its autoscaler can start). The trial itself uses
    CUDA only where Ray gave it a GPU and CUDA exists (``trial_device``)."""
    if spec.resources.gpu != "auto":
        return float(spec.resources.gpu)
    return gpu_plan(spec, read_cluster())[0]


def trial_request(spec: StudySpec, gpu_share: float) -> dict[str, float]:
    """What one trial asks Ray for, in Ray's resource names (``study.tuner.trial_resources``:
    one bundle, so one node must hold all of it); amounts of 0 are no request."""
    request = {"CPU": float(spec.resources.cpu), "GPU": float(gpu_share),
               **{k: float(v) for k, v in spec.resources.custom.items()}}
    return {k: v for k, v in request.items() if v > 0}


def _holds(resources: dict[str, float], request: dict[str, float], cpu_unknown: bool) -> bool:
    """Can a node with ``resources`` hold ``request``? A node type that does not state its CPUs
    (the autoscaler reads them from the instance type) counts as holding any CPU request."""
    return all(resources.get(k, 0.0) >= v or (k == "CPU" and cpu_unknown and k not in resources)
               for k, v in request.items())


def _amounts(resources: dict[str, float], keys) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in keys)


def unmet_request(request: dict[str, float], view: ClusterView) -> str | None:
    """One line when no node of the cluster can ever hold a trial's ``request`` (Tune would wait
    for it forever, silently), else None: no live node holds it and no node type the autoscaler
    may start does. Only decided where the cluster is known in full: a Ray this driver started
    (live is everything) or an autoscaler whose node types were read; a joined cluster whose
    autoscaler cannot be read may grow, and is not refused."""
    if not view.live or not (view.started_here or view.declared is not None):
        return None
    if any(_holds(r, request, cpu_unknown=False) for r in view.live):
        return None
    types = [t for t in view.declared or () if t.max_workers > 0]
    if any(_holds(t.resources, request, cpu_unknown=True) for t in types):
        return None
    keys = list(request)
    best = max(view.live, key=lambda r: [min(r.get(k, 0.0) / v, 1.0) for k, v in request.items()])
    where = ("a local Ray started for this study, no autoscaler" if view.started_here else
             f"{view.live_nodes} live node(s); node types the autoscaler can start: "
             + ("; ".join(f"{t.name} {_amounts(t.resources, keys)}" for t in types) or "none")
             + f" ({view.source})")
    return (f"resources: each trial asks for {_amounts(request, keys)} on one node, but no node "
            f"of this cluster has that (the largest live one: {_amounts(best, keys)}; {where}): "
            "lower resources.cpu / resources.gpu in the study file")
