"""A real Prometheus server and ``promtool`` for the tests that scrape the appliance's /metrics.

Shared by ``test_service_metrics`` (``appliance metrics`` in the host namespace) and ``test_serve`` (``appliance
serve`` inside a lab namespace).  Everything takes an optional ``wrap``: a function that turns an argv into one
run elsewhere (``lab.netns_cmd``), so the server listens on the namespace's loopback and HTTP requests to it
are made from inside the namespace too; without it, things happen here.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: appliance
    static_configs:
      - targets: ["{target}"]
"""

# An HTTP GET made by a python started in the namespace: prints the status, then the body.
_GET = ("import urllib.request, urllib.error, sys\n"
        "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")

_FREE_PORT = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"


def get(url: str, wrap=None) -> tuple[int, str]:
    """(status, body) of a GET; an error status is an answer, not an exception."""
    if wrap is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
    done = subprocess.run(wrap([sys.executable, "-c", _GET, url]), capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise OSError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "the GET failed")
    status, _, body = done.stdout.partition("\n")
    return int(status), body


def free_port(wrap=None) -> int:
    """A loopback port nothing listens on now (in the namespace of ``wrap``)."""
    argv = [sys.executable, "-c", _FREE_PORT]
    return int(subprocess.run(wrap(argv) if wrap else argv, capture_output=True, text=True, check=True,
                              timeout=30).stdout)


def stop(proc) -> None:
    """End a process this test started (TERM, then KILL), whatever state the test is in."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, timeout: float, wrap=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(url, wrap)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def query(base: str, promql: str, wrap=None) -> float | None:
    """The value of an instant query's first series, None when it has none (not scraped yet)."""
    code, body = get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}), wrap)
    assert code == 200, body
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_query(base: str, promql: str, want: float, timeout: float = 30, wrap=None) -> float | None:
    """Query until the value is ``want`` (scrapes come every second) or ``timeout``; the last value."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline and value != want:
        value = query(base, promql, wrap)
        if value != want:
            time.sleep(0.5)
    return value


def have_prometheus() -> str | None:
    """None, or why the live Prometheus tests skip."""
    if shutil.which("prometheus") is None:
        return "the prometheus server is not installed (Debian package prometheus)"
    return None


def start_prometheus(workdir: Path, target: str, wrap=None) -> tuple[subprocess.Popen, str]:
    """A Prometheus server scraping ``target`` (HOST:PORT) every second, its storage in ``workdir``, on a free
    loopback port; (process, its HTTP base URL) once it says ready.  The caller stops it with ``stop``."""
    config = workdir / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(target=target))
    address = f"127.0.0.1:{free_port(wrap)}"
    argv = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={address}"]
    with open(workdir / "prometheus.log", "w") as log:
        proc = subprocess.Popen(wrap(argv) if wrap else argv, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_http(f"http://{address}/-/ready", 60, wrap)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://{address}"


def promtool_check(text: str) -> subprocess.CompletedProcess:
    """``promtool check metrics`` of an exposition (the caller skips when promtool is missing)."""
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
