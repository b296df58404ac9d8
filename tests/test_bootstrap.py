"""provisioning/bootstrap.sh, run for real in a throwaway Debian 12 root file system (never on this host).

The root is built by mmdebstrap from Debian's archive (minbase plus the Debian packages bootstrap asks for,
``bootstrap.sh --print-packages``, all but one, which bootstrap then installs itself with apt-get) and cached as
a tarball under ~/.cache/appliance-test/, keyed by a hash of the suite, mirror and package list; the Python
dependencies come from a wheelhouse cached beside it (keyed by pyproject.toml), which bootstrap installs from
with ``--wheelhouse`` (no index).  Each run extracts a fresh root, so every test run starts from a host that has
never seen the appliance.

The tests share that root and run in order: install (chroot, as a host would run it), replay as the service's
user, a second run that must change nothing (through ``--root``, as an image build would), an upgrade from a
changed copy of the checkout, uninstall.  Skipped with the reason when not root, or mmdebstrap or the Debian
mirror is missing.

Opt-in (``APPLIANCE_TEST_BOOTSTRAP=1``, ``make test-bootstrap``), so the whole suite (CI) skips it, saying how to
run it: a warm run takes about six and a half minutes on two shared vCPUs, most of it numba compiling the kernels
in the fresh root, twice (install and upgrade) -- which is the point of the test and cannot be cached (numba keys
its cache on the installed files' paths and times) -- and a cold one first downloads about 640 MB from Debian.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = REPO / "provisioning" / "bootstrap.sh"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "appliance-test"
SRC_IN_ROOT = "/mnt/appliance-src"
WHEELS_IN_ROOT = "/mnt/appliance-wheelhouse"
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
TIMINGS: dict[str, float] = {}


OPT_IN = "APPLIANCE_TEST_BOOTSTRAP"


def _skip_reason() -> str | None:
    if os.environ.get(OPT_IN) != "1":
        return (f"set {OPT_IN}=1 to run (make test-bootstrap): about 6.5 minutes warm, most of it numba compiling "
                f"in the fresh root, and a 640 MB Debian download the first time")
    if os.geteuid() != 0:
        return "needs root (chroot, mounts)"
    for tool in ("mmdebstrap", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install mmdebstrap)"
    try:
        urllib.request.urlopen(f"{MIRROR}/dists/{SUITE}/Release", timeout=10).close()
    except OSError as err:
        return f"the Debian mirror {MIRROR} is not reachable ({err})"
    return None


def _packages() -> list[str]:
    out = subprocess.run(["sh", str(BOOTSTRAP), "--print-packages"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


# Left out of the cached root, so that bootstrap's own apt-get path (update, install) runs in every test.
LEFT_FOR_BOOTSTRAP = "ethtool"


def _root_tarball() -> Path:
    packages = [p for p in _packages() if p != LEFT_FOR_BOOTSTRAP]
    key = hashlib.sha256(" ".join([SUITE, MIRROR, "minbase", *packages]).encode()).hexdigest()[:16]
    tarball = CACHE / f"{SUITE}-minbase-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(f".partial-{os.getpid()}.tar")
        made = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(packages)}",
                               SUITE, str(partial), MIRROR], capture_output=True, text=True, timeout=1800)
        if made.returncode != 0:
            partial.unlink(missing_ok=True)
            pytest.fail(f"mmdebstrap failed: {(made.stderr or made.stdout).strip().splitlines()[-1:]}")
        partial.rename(tarball)
        for stale in CACHE.glob(f"{SUITE}-minbase-*.tar"):      # built for another package list
            if stale != tarball and ".partial-" not in stale.name:
                stale.unlink()
    return tarball


def _wheelhouse() -> Path:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel"]
    key = hashlib.sha256(" ".join([sys.version.split()[0], *wanted]).encode()).hexdigest()[:16]
    house = CACHE / f"wheels-{key}"
    if not house.exists():
        partial = CACHE / f"wheels-{key}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(partial),
                               *wanted], capture_output=True, text=True, timeout=900)
        if made.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            pytest.fail(f"pip download of the wheelhouse failed: {made.stderr.strip().splitlines()[-1:]}")
        partial.rename(house)
    return house


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


class Root:
    """A Debian root extracted from the cached tarball, /proc, /dev and the checkout (read-only) mounted."""

    def __init__(self, path: Path, wheelhouse: Path):
        self.path = path
        self.wheelhouse = wheelhouse

    def mount(self) -> None:
        def bind(source, target, ro=False):
            (self.path / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(source), str(self.path / target.lstrip("/"))], check=True)
            if ro:
                subprocess.run(["mount", "-o", "remount,bind,ro", str(self.path / target.lstrip("/"))], check=True)

        subprocess.run(["mount", "-t", "proc", "proc", str(self.path / "proc")], check=True)
        bind("/dev", "/dev")
        bind(REPO, SRC_IN_ROOT, ro=True)
        bind(self.wheelhouse, WHEELS_IN_ROOT, ro=True)

    def unmount(self) -> None:
        for point in sorted(_mounts_under(self.path), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def run(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(self.path), "/usr/bin/env", "-i", PATH, "HOME=/root", *argv],
                              capture_output=True, text=True, timeout=timeout)

    def bootstrap(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("/bin/sh", f"{SRC_IN_ROOT}/provisioning/bootstrap.sh", "--wheelhouse", WHEELS_IN_ROOT, *args)

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    tarball = _root_tarball()
    wheelhouse = _wheelhouse()
    TIMINGS["root tarball and wheelhouse (cached after the first run)"] = time.monotonic() - started
    path = tmp_path_factory.mktemp("debian-root")
    started = time.monotonic()
    subprocess.run(["tar", "-C", str(path), "--numeric-owner", "-xf", str(tarball)], check=True)
    TIMINGS["extract"] = time.monotonic() - started
    made = Root(path, wheelhouse)
    made.mount()
    try:
        yield made
    finally:
        made.unmount()
        left = _mounts_under(path)
        # Never delete through a mount that is still there: the checkout is bound into this tree.
        assert not left, f"still mounted under the test root: {left}"
        shutil.rmtree(path, ignore_errors=True)
        print("\ntimings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


def _lines(result) -> list[str]:
    return result.stdout.splitlines()


def _check_one_line_each(result) -> None:
    for line in _lines(result):
        assert line.startswith("bootstrap: "), line


def test_install_in_a_fresh_debian_root(root):
    started = time.monotonic()
    first = root.bootstrap()
    TIMINGS["first bootstrap"] = time.monotonic() - started
    assert first.returncode == 0, first.stderr + first.stdout
    _check_one_line_each(first)
    out = first.stdout
    assert f"bootstrap: Debian packages installed: {LEFT_FOR_BOOTSTRAP}" in out
    compiled = re.search(r"numba kernels compiled into /var/cache/appliance/numba in ([0-9.]+) s", out)
    assert compiled, out
    TIMINGS["numba compile (in the first bootstrap)"] = float(compiled.group(1))
    assert "config check: /etc/appliance/appliance.toml is valid" in out
    assert "systemd is not running here" in out and "the unit is installed, not enabled or started" in out
    assert "host tuning skipped: the config's capture interface 'eth1' is not on this host" in out
    assert not (root.path / "etc/systemd/system/multi-user.target.wants/appliance.service").exists()

    version = root.run("/opt/appliance/bin/appliance", "--version")
    assert version.returncode == 0 and version.stdout.startswith("appliance "), version.stderr
    assert root.file("/etc/systemd/system/appliance.service").read_bytes() == \
        (REPO / "provisioning/systemd/appliance.service").read_bytes()
    assert root.file("/etc/appliance/appliance.toml").read_bytes() == \
        (REPO / "provisioning/appliance.toml.example").read_bytes()
    check = root.run("/opt/appliance/bin/appliance", "config", "check", "/etc/appliance/appliance.toml")
    assert check.returncode == 0, check.stderr
    # Not an editable install: the package lives in the venv, and finds the XDP object bootstrap installed.
    where = root.run("/opt/appliance/bin/python", "-c",
                     "import appliance, appliance.ring.steer as s; print(appliance.__file__); print(s.ensure_built())")
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == ["/opt/appliance/lib/python3.11/site-packages/appliance/__init__.py",
                                    "/opt/appliance/share/appliance/feed_steer.bpf.o"]
    passwd = root.file("/etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("appliance:"))
    assert user[5:] == ["/var/lib/appliance", "/usr/sbin/nologin"]
    uid = int(user[2])
    cached = list(root.file("/var/cache/appliance/numba").rglob("*.nbi"))
    assert cached and all(p.stat().st_uid == uid for p in cached)
    for d in ("/var/lib/appliance", "/var/cache/appliance/numba"):
        assert root.file(d).stat().st_uid == uid


def test_replay_as_the_appliance_user_equals_the_checkouts(root, tmp_path):
    started = time.monotonic()
    replay = root.run("runuser", "-u", "appliance", "--", "env", "NUMBA_CACHE_DIR=/var/cache/appliance/numba",
                      "/opt/appliance/bin/appliance", "replay", "/opt/appliance/share/appliance/sample.pcap",
                      "--out", "/var/lib/appliance/replay-test", "-q")
    TIMINGS["replay as appliance (warm numba cache)"] = time.monotonic() - started
    assert replay.returncode == 0, replay.stderr
    here = subprocess.run([sys.executable, "-m", "appliance", "replay", str(REPO / "pcaps/sample.pcap"),
                           "--out", str(tmp_path / "host"), "-q"], capture_output=True, text=True)
    assert here.returncode == 0, here.stderr
    for table in ("bbo.csv", "trades.csv", "vwap.csv"):
        assert root.file(f"/var/lib/appliance/replay-test/{table}").read_bytes() == \
            (tmp_path / "host" / table).read_bytes(), table
    shutil.rmtree(root.file("/var/lib/appliance/replay-test"))


def test_second_run_through_root_changes_nothing(root):
    config = root.file("/etc/appliance/appliance.toml")
    edited = config.read_text().replace('interface = "eth1"', 'interface = "feed0"')
    config.write_text(edited)
    started = time.monotonic()
    second = subprocess.run(["sh", str(BOOTSTRAP), "--root", str(root.path), "--wheelhouse", str(root.wheelhouse)],
                            capture_output=True, text=True, timeout=900)
    TIMINGS["second bootstrap (--root)"] = time.monotonic() - started
    assert second.returncode == 0, second.stderr + second.stdout
    _check_one_line_each(second)
    assert second.stdout.splitlines()[-1] == "bootstrap: done: nothing to change", second.stdout
    assert "numba kernels already compiled" in second.stdout
    assert "host tuning skipped: building a root file system" in second.stdout
    assert config.read_text() == edited
    assert not [p for p in _mounts_under(root.path) if "appliance-bootstrap" in p]


RECORDING = "/var/lib/appliance/recordings/feed-20261201T133000Z-1.pcap"


def test_upgrade_in_place_keeps_config_recordings_and_tune_state(root, tmp_path):
    recording = root.file(RECORDING)
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(b"not really a pcap, but ours to keep")
    tune_state = root.file("/var/lib/appliance/tune-state.json")
    tune_state.write_text('{"kept": "by an upgrade"}\n')
    config = root.file("/etc/appliance/appliance.toml").read_bytes()
    # A newer checkout: a copy of this one with a change in the package.
    newer = tmp_path / "newer"
    shutil.copytree(REPO, newer, ignore=shutil.ignore_patterns(".git", ".venv", "out", "build", "__pycache__",
                                                                ".pytest_cache", ".hypothesis", ".vagrant"))
    with open(newer / "appliance" / "__init__.py", "a") as f:
        f.write("UPGRADE_MARK = 'newer build'\n")
    started = time.monotonic()
    upgrade = subprocess.run(["sh", str(newer / "provisioning/bootstrap.sh"), "--root", str(root.path),
                              "--wheelhouse", str(root.wheelhouse)], capture_output=True, text=True, timeout=900)
    TIMINGS["upgrade bootstrap (--root)"] = time.monotonic() - started
    assert upgrade.returncode == 0, upgrade.stderr + upgrade.stdout
    _check_one_line_each(upgrade)
    assert "package: appliance 0.1.0 installed into /opt/appliance from appliance-0.1.0-py3-none-any.whl" in upgrade.stdout
    assert "numba kernels compiled into /var/cache/appliance/numba in " in upgrade.stdout
    mark = root.run("/opt/appliance/bin/python", "-c", "import appliance; print(appliance.UPGRADE_MARK)")
    assert mark.stdout == "newer build\n", mark.stderr
    assert root.file("/etc/appliance/appliance.toml").read_bytes() == config
    assert recording.read_bytes() == b"not really a pcap, but ours to keep"
    assert tune_state.read_text() == '{"kept": "by an upgrade"}\n'
    # uninstall would revert the tuning this state describes; none was applied here
    tune_state.unlink()


def test_uninstall_keeps_config_and_recordings(root):
    recording = root.file(RECORDING)
    assert recording.exists()
    config = root.file("/etc/appliance/appliance.toml").read_bytes()
    gone = root.bootstrap("--uninstall")
    assert gone.returncode == 0, gone.stderr + gone.stdout
    _check_one_line_each(gone)
    for path in ("/opt/appliance", "/etc/systemd/system/appliance.service", "/var/cache/appliance"):
        assert not root.file(path).exists(), path
    assert "appliance:" not in root.file("/etc/passwd").read_text()
    assert "appliance:" not in root.file("/etc/group").read_text()
    assert recording.read_bytes() == b"not really a pcap, but ours to keep"
    assert root.file("/etc/appliance/appliance.toml").read_bytes() == config
    assert sorted(p.name for p in root.file("/var/lib/appliance").iterdir()) == ["recordings"]
    again = root.bootstrap("--uninstall")
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "bootstrap: done: nothing to change"


def test_errors_are_one_sentence(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: bootstrap refuses to run otherwise")
    wrong = subprocess.run(["sh", str(BOOTSTRAP), "--frobnicate"], capture_output=True, text=True)
    assert wrong.returncode == 1 and wrong.stderr == "bootstrap: unknown argument '--frobnicate' " \
        "(--uninstall, --root DIR, --wheelhouse DIR, --numba-cpu NAME)\n"
    empty = subprocess.run(["sh", str(BOOTSTRAP), "--root", str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 1 and empty.stderr == f"bootstrap: {tmp_path} is not a Debian root file system\n"
