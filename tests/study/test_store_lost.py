"""The tracking store going away is seen within seconds: a SQLite store deleted in the middle of a
study stops it with one line naming the store, an exit status of 1 and the summary table; the
study directory still resumes. The watcher itself is checked without Ray too."""

from __future__ import annotations

import os
import re
import textwrap
import time

import pytest

from study.store_watch import StoreWatch
from tests.study.test_chaos import Study, _progress

LONG_TOY = """
    name: store-lost
    search: grid
    fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 4000, stats_every: 50,
            eval_every: 100, fid_samples: 40, batch_size: 16, device: cpu}
    grid: {loss: [ns, wgan]}
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}
"""


def test_the_watch_sees_a_sqlite_store_deleted_replaced_or_read_only(tmp_path):
    db = tmp_path / "m.db"
    db.write_bytes(b"x")
    watch = StoreWatch(f"sqlite:///{db}")
    assert watch.check() is None
    with open(db, "rb"):  # a connection keeps the deleted file (and its inode number) alive
        db.unlink()
        assert "deleted" in watch.check()
        db.write_bytes(b"x")  # what SQLite does at the path: a new, empty file
        assert "replaced" in watch.check()
    assert StoreWatch("file:///somewhere").check() is None


def test_the_watch_gives_a_server_the_retry_bound(tmp_path):
    watch = StoreWatch("http://127.0.0.1:9", outage_s=0.5)  # port 9: nothing answers
    assert watch.check() is None  # down, within the bound
    time.sleep(0.7)
    line = watch.check()
    assert line.startswith("tracking store http://127.0.0.1:9: the server has not answered")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.scenario
def test_a_deleted_sqlite_store_stops_the_study_within_30s_with_one_line(tmp_path):
    study = Study(tmp_path, "grid-toy", pause_step=None)
    study.file.write_text(textwrap.dedent(LONG_TOY))
    db = tmp_path / "mlflow.db"
    gone: list[float] = []

    def delete_once(text: str) -> bool:
        if not gone and _progress(text):
            for suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(f"{db}{suffix}"):
                    os.unlink(f"{db}{suffix}")
            gone.append(time.time())
        return False

    try:
        rc, text = study.run(moment=delete_once, timeout=400)
        took = time.time() - gone[0]
        assert rc == 1, text
        assert took < 30, (took, text)
        lines = [ln for ln in text.splitlines() if f"tracking store sqlite:///{db}" in ln]
        # deleted, or already replaced by the empty file SQLite makes at the path: the watch
        # looks every 2 s, a trial's reconnect can come first
        assert len(lines) == 1 and re.search(r"deleted|replaced", lines[0]), text
        assert re.search(r"2 trials \(.*interrupted", text), text  # the summary table
        assert "Traceback" not in text, text
    finally:
        study.close()
