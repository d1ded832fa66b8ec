"""The deployment smoke scripts under tools/deploy/, run as they are (see their headers for what each does)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.daemon import REPO_ROOT

SKIPPED = 77  # the scripts' exit code when a tool (podman, debootstrap, qemu, root) is missing


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("script", ["podman_smoke.sh", "arm64_smoke.sh"])
def test_smoke_script(script, tmp_path):
    log = tmp_path / f"{script}.log"
    with log.open("w") as out:
        result = subprocess.run(["bash", str(REPO_ROOT / "tools" / "deploy" / script)], cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, timeout=3500)
    text = log.read_text(errors="replace")
    if result.returncode == SKIPPED:
        pytest.skip(text.strip().splitlines()[-1])
    assert result.returncode == 0, text[-4000:]
