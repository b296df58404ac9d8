"""Shared fixtures and the skip rules for tests that need privileges or kernel facilities.

Markers (declared in pyproject.toml): ``root``, ``netns``, ``hugepages``, ``qemu``, ``slow``.  A marked test
is skipped, with the reason, on a machine that lacks the facility; here and in CI (root, netns, veth, BPF)
they run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


def module_lab(prefix: str, queues: int = 1):
    """A module-scoped ``lab`` fixture: a lab namespace (veth lab0 <-> lab1, ``queues`` queues each) made for the
    module's tests and deleted after them.  In a test module: ``lab = module_lab("appl-xyz")``."""
    @pytest.fixture(scope="module")
    def lab():
        from appliance.capture.lab import Lab

        with Lab(f"{prefix}-{os.getpid()}", queues=queues) as made:
            yield made

    return lab


def _is_root() -> bool:
    return os.geteuid() == 0


def _has_netns() -> str | None:
    if not _is_root():
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    name = f"appl-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if made.returncode != 0:
        return "cannot create a network namespace: " + made.stderr.decode(errors="replace").strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _hugepages_reason() -> str | None:
    path = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
    return None if path.exists() else "the kernel offers no 2 MB hugepages"


_REASONS: dict[str, str | None] = {}


def _reason(marker: str) -> str | None:
    if marker not in _REASONS:
        if marker == "root":
            _REASONS[marker] = None if _is_root() else "needs root"
        elif marker == "netns":
            _REASONS[marker] = _has_netns()
        elif marker == "hugepages":
            _REASONS[marker] = _hugepages_reason()
        elif marker == "qemu":
            _REASONS[marker] = None if shutil.which("qemu-system-x86_64") else "needs qemu-system-x86_64"
        else:
            _REASONS[marker] = None
    return _REASONS[marker]


def pytest_runtest_setup(item):
    for marker in ("root", "netns", "hugepages", "qemu"):
        if item.get_closest_marker(marker) is not None:
            reason = _reason(marker)
            if reason:
                pytest.skip(f"{marker}: {reason}")


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """The folder of external fixtures beside the project; skip when this is an installed copy without it."""
    if not FIXTURES.is_dir():
        pytest.skip(f"external fixtures folder {FIXTURES} is absent (installed copy of the project)")
    return FIXTURES
