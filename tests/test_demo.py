"""``pulse demo`` on its embedded Redis: the tour, then the dashboard until Ctrl-C;
``--no-serve`` exits after the summary."""

import signal
import subprocess
import sys
import time
import urllib.request

import orjson

from conftest import free_port

SMALL = ["--users", "80", "--events", "2000"]


def test_demo_with_no_serve_exits_after_its_summary(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pulse", "demo", *SMALL, "--workdir", str(tmp_path), "--no-serve"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["redis"] == "embedded" and summary["events_ok"] > 0 and "dashboard" not in summary


def test_demo_serves_the_dashboard_on_its_embedded_redis_until_ctrl_c(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "demo", *SMALL, "--workdir", str(tmp_path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        summary = orjson.loads(proc.stdout.readline())
        assert summary["dashboard"] == f"http://127.0.0.1:{port}/"
        user = None
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(summary["dashboard"] + "api/updates?count=1", timeout=5) as r:
                    user = orjson.loads(r.read())[0]["user_id"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not come up"
                time.sleep(0.3)
        with urllib.request.urlopen(f"{summary['dashboard']}users/{user}", timeout=10) as r:
            page = r.read().decode()
        assert r.status == 200 and "Recent events" in page and "<td data-ts=" in page  # the demo keeps recent events
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/" in err
