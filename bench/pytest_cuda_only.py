"""pytest plugin (``-p pytest_cuda_only`` with ``bench/`` on the path): keep only the tests that
need CUDA, i.e. those carrying a ``skipif`` mark (on the test, its class or its module) whose
reason names CUDA; every other collected test is deselected. ``bench/gpu_check.sh`` runs these on
a GPU machine."""

from __future__ import annotations


def needs_cuda(item) -> bool:
    return any("cuda" in str(mark.kwargs.get("reason", "")).lower()
               for mark in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if needs_cuda(item)]
    drop = [item for item in items if not needs_cuda(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
