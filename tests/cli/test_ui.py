import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_store_of_the_working_directory(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demoe.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        status = None
        while time.time() < deadline and status != 200:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert (tmp_path / "mlflow.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
