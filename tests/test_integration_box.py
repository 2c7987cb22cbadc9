"""The Vagrant box lab/debian12, built here (or reused once added) and added to Vagrant for libvirt.

Apart from tests/test_integration_vagrant.py so that it runs with the local labs: building the box is long work on
the machine (debootstrap, a disk image) that no timing depends on, while the VMs' module runs alone after them.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from lab.testing import needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labbox")  # no lab is made: a folder to run `lab box build` in
pytestmark = pytest.mark.integration

needs_root()


def test_box_is_built_or_reused(tmp_path) -> None:
    with scratch_lab(NAME, range(60, 80), folder=tmp_path, provider="vagrant", timeout=1800) as lab:
        output = lab.ok("box", "build")
    assert "box lab/debian12 is ready" in output
    listed = subprocess.run(["vagrant", "box", "list", "--machine-readable"], capture_output=True, text=True,
                            timeout=120, check=True).stdout
    assert ",box-name,lab/debian12" in listed and ",box-provider,libvirt" in listed
