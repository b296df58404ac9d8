"""The top-level Vagrantfile passes `vagrant validate` (Debian's vagrant; with vagrant-libvirt, the libvirt
provider's settings are checked too).  Run on a copy, so the checkout gets no .vagrant/ directory."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANTFILE = Path(__file__).resolve().parents[1] / "Vagrantfile"

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="needs vagrant (apt-get install vagrant vagrant-libvirt)")


def _libvirt_plugin() -> bool:
    listed = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True)
    return "vagrant-libvirt" in listed.stdout


def _validate(directory: Path, text: str, *args: str, provider: str | None = None) -> subprocess.CompletedProcess:
    (directory / "Vagrantfile").write_text(text)
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1")
    if provider:
        env["VAGRANT_DEFAULT_PROVIDER"] = provider
    return subprocess.run(["vagrant", "validate", *args], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=120)


def test_vagrantfile_validates(tmp_path):
    text = VAGRANTFILE.read_text()
    common = _validate(tmp_path, text, "--ignore-provider")
    assert common.returncode == 0, common.stdout + common.stderr
    if not _libvirt_plugin():
        pytest.skip("the libvirt provider's settings were not checked: needs vagrant-libvirt (apt-get install vagrant-libvirt)")
    libvirt = _validate(tmp_path, text, provider="libvirt")
    assert libvirt.returncode == 0, libvirt.stdout + libvirt.stderr
    # The same check refuses a setting the provider does not have: it reads the provider block.
    broken = _validate(tmp_path, text.replace("lv.cpus = CPUS", "lv.cpus = CPUS\n    lv.no_such_setting = 1"),
                       provider="libvirt")
    assert broken.returncode != 0 and "no_such_setting" in broken.stdout + broken.stderr
