import socket
import subprocess

import pytest


@pytest.fixture
def no_fetching(monkeypatch):
    """Fail the test on any subprocess (pip, apt-get) or network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess or network call: {args[:2]}")

    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
