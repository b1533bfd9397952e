"""Test-wide settings: one torch thread (the CI box has 2 cores and pytest runs one process), and
no network — any attempt to connect outside this machine fails the test that made it."""

import ipaddress
import socket

import pytest
import torch

torch.set_num_threads(1)

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            ip = ipaddress.ip_address(host)
            local = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
        except ValueError:  # a host name: only localhost is allowed
            local = host in ("localhost",)
        if not local:
            raise OSError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


def pytest_configure(config):
    """Reference-statistics cache and study-signing key in fresh temporary directories (never the
    user's ~/.cache or ~/.config); set before any Ray worker starts so trials inherit them."""
    import os
    import tempfile

    if "LIPSTUDY_CACHE" not in os.environ:
        os.environ["LIPSTUDY_CACHE"] = tempfile.mkdtemp(prefix="lipstudy-test-cache-")
        _MADE.append(os.environ["LIPSTUDY_CACHE"])
    # the study-signing key (study.trust) of a test session: never the user's ~/.config/lipstudy
    if "LIPSTUDY_SIGNING_KEY_FILE" not in os.environ:
        keys = tempfile.mkdtemp(prefix="lipstudy-test-key-")
        _MADE.append(keys)
        os.environ["LIPSTUDY_SIGNING_KEY_FILE"] = os.path.join(keys, "signing.key")


_MADE: list[str] = []


def pytest_unconfigure(config):
    """Remove the session's temporary cache and key directories (a session left ≈ 25 MB each)."""
    import shutil

    for path in _MADE:
        shutil.rmtree(path, ignore_errors=True)
