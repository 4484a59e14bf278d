"""The serve extra stays optional: the core never imports the web stack, and `samplegraph serve` without it
says which package is missing and how to install it (exit 1, no traceback)."""
from __future__ import annotations

import subprocess
import sys

from helpers_serve import PACKAGE_PARENT

CHECK = """
import sys
sys.modules["fastapi"] = None  # as if the extra were not installed
import samplegraph, samplegraph.runtime.cli as cli
from samplegraph import Runtime
Runtime(device="cpu", cache=False).run({"version": 1, "nodes": {"s": {"kind": "schedule.karras"}}, "outputs": ["s"]})
web = sorted(m for m in ("uvicorn", "starlette", "websockets") if m in sys.modules)
assert not web, web
sys.exit(cli.main(["serve", "--state-dir", sys.argv[1]]))
"""


def test_serve_without_the_extra(tmp_path):
    done = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "state")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(PACKAGE_PARENT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "pip install 'samplegraph[serve]'" in done.stderr and "fastapi" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # nothing was created


def test_a_busy_port_or_foreign_host_is_a_clear_error_before_anything_starts(tmp_path, capsys):
    """`samplegraph serve` binds its address first: a port in use, a host this machine lacks or a port number
    out of range is one line naming the option to change (no uvicorn traceback, no state dir created)."""
    import socket

    import pytest

    from samplegraph.runtime import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--port", str(port), "--state-dir", str(tmp_path / "state")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and "choose another --port" in err
    assert cli.main(["serve", "--host", "a..b", "--state-dir", str(tmp_path / "state")]) == 1  # no DNS asked
    assert "--host 'a..b' is not an address of this machine" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
    for bad in ("99999", "0", "http"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["serve", "--port", bad])
        assert exit_.value.code == 2
        assert f"argument --port: expected a port number from 1 to 65535, got '{bad}'" in capsys.readouterr().err
