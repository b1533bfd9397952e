"""Where a study's trials run and how many configurations each trial packs, decided against its
cluster before the parent MLflow run opens.

``prepare_cluster`` starts or joins Ray (``study.ray_runtime``), reads the cluster
(``study.cluster``), refuses what it cannot run with one line per problem, resolves
``resources: {gpu: auto}`` into a GPU share and the population: a study's own ``population``
when set, else, for ``gpu: auto`` on a cluster with GPUs, the best P ``bench/gpu_throughput.py``
measured (``study.cost``).
"""

from __future__ import annotations

from typing import Any

from study import cluster, ray_runtime
from study.spec import StudyError, StudySpec


def auto_population(spec: StudySpec, cluster_gpus: float, figures: dict[str, Any] | None) -> int:
    """The population a study runs with: its own ``population`` when set, else, for ``gpu: auto``
    on a cluster with GPUs, the best P ``bench/gpu_throughput.py`` measured (``study.cost``
    figures; 1 without them)."""
    if spec.resources.gpu != "auto" or "population" in spec.model_fields_set or cluster_gpus <= 0:
        return spec.population
    from study.cost import best_population

    return best_population(figures)


def resolve_population(spec: StudySpec, population: int | None = None,
                       gpus: float | None = None) -> StudySpec:
    """``spec`` with its effective population (after ``ray.init``): ``population`` when given (a
    resume keeps the first run's), else :func:`auto_population` for ``gpus`` (the GPUs the
    cluster has or can start, ``study.cluster.ClusterView.gpus``; default: read the cluster). A P
    the study cannot take (a searched study's rules, ``study.schema``) keeps the study's own, with
    one line saying why."""
    if population is None:
        from study.cost import load_figures

        if gpus is None:
            gpus = cluster.read_cluster().gpus
        population = auto_population(spec, gpus, load_figures())
    if population == spec.population:
        return spec
    from pydantic import ValidationError

    try:
        new = StudySpec.model_validate({**spec.model_dump(exclude_unset=True),
                                        "population": population})
    except ValidationError as err:
        print(f"gpu: auto: population {population} (benchmark's best) does not fit this study "
              f"({err.errors()[0]['msg']}); running population {spec.population}", flush=True)
        return spec
    print(f"gpu: auto: population {population} per trial (bench/gpu_throughput.py's best on this "
          "GPU shape; set population to choose)", flush=True)
    return new


def prepare_cluster(spec: StudySpec, storage: str, tracking_uri: str, *, address: str | None,
                    verbose: bool, shared_fs: bool | None = None,
                    population: int | None = None) -> StudySpec:
    """Start or join Ray and check the cluster before the parent run opens: refuse local storage
    and tracking on more than one node (one line each), resolve ``gpu: auto`` (printing what it
    decided) and the population (:func:`resolve_population`), and refuse a per-trial request no
    node can hold (``study.cluster.unmet_request``). Returns the spec as it will run: its GPU
    share a number, its population resolved (``population``: a resume's recorded one)."""
    ray_runtime.init_ray(address, verbose)
    view = cluster.read_cluster()
    shared = cluster.shared_fs_default() if shared_fs is None else shared_fs
    problems = cluster.multi_node_problems(view, storage, tracking_uri, shared)
    try:
        cluster.gpu_plan(spec, view)
    except StudyError as err:
        problems.append(str(err))
    if problems:
        raise cluster.ClusterError(problems)
    spec = resolve_population(spec, population, view.gpus)
    share, note = cluster.gpu_plan(spec, view)
    unmet = cluster.unmet_request(cluster.trial_request(spec, share), view)
    if unmet:  # Tune would wait for it forever
        raise cluster.ClusterError([unmet])
    if note:
        print(note, flush=True)
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpu": share})})
