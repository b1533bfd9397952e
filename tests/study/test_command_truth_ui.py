"""``lipstudy ui`` on a port another program holds: one line naming the port and a free one,
exit status 2, before any server starts or any link is printed (a printed link would lead to the
other program)."""

from __future__ import annotations

import socket

from study.cli import main


def test_ui_refuses_a_taken_port(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    db.touch()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rc = main(["ui", "--store", str(db), "--port", str(port)])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert out == "", out  # no link to whatever holds the port
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"--port {port}" in lines[0], err
    assert "in use" in lines[0] and "free now" in lines[0], err
