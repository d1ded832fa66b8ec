"""schemathesis generates requests from the daemon's own /openapi.json: no 5xx, and every response's status,
content type, headers and body conform to the spec. Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import ThreadedDaemon

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")


def test_generated_requests_get_no_5xx_and_conform_to_the_spec(make_settings, tmp_path):
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    # No registry: an unknown model is a 404 (a registry that is down would rightly be a 503).
    with ThreadedDaemon(make_settings(deepstack_model="colour/1", max_batch=4, api_url="")) as daemon:
        done = subprocess.run([st, "run", daemon.url + "/openapi.json", "--max-examples", "25",
                               "--generation-deterministic", "--checks", CHECKS, "--workers", "1"],
                              capture_output=True, text=True, timeout=600)
    report = done.stdout[-8000:]
    assert done.returncode == 0, report
    assert "Tested: " in report
