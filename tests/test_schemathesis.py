"""schemathesis generates requests from the daemon's own /openapi.json and runs every check it has
(`--checks all`): no 5xx, responses conform to the spec, schema-valid requests are accepted and
schema-violating ones refused. Bounded: a fixed number of deterministic examples per operation.

schemathesis.toml (repository root) scopes the two 400s a schema cannot prevent: image bytes that do not
decode, and a model on another task's /infer route."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import ThreadedDaemon

REPO_ROOT = Path(__file__).resolve().parents[1]
REGISTRY_DOWN = "could not connect to the model registry"


def _settings(make_settings, api_url: str):
    # URL input off: generated http(s) URLs would make the daemon resolve and fetch arbitrary hosts (slow, and
    # off this machine); /openapi.json then leaves 'url' out of the image types. URL rules: test_hardening.py.
    return make_settings(deepstack_model="colour/1", max_batch=4, api_url=api_url, allow_url_input=False)


def _schemathesis(url: str) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return subprocess.run([st, "--config-file", str(REPO_ROOT / "schemathesis.toml"), "run", url + "/openapi.json",
                           "--max-examples", "25", "--generation-deterministic", "--checks", "all", "--workers", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def test_generated_requests_pass_every_check(make_settings):
    # No registry: an unknown model is a 404 (a registry that is down would rightly be a 503, below).
    with ThreadedDaemon(_settings(make_settings, "")) as daemon:
        done = _schemathesis(daemon.url)
    report = done.stdout[-8000:]
    assert done.returncode == 0, report
    assert "Tested: " in report
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    assert selected and selected[1] == selected[2], report  # every documented operation was exercised


def test_with_the_registry_unreachable_only_its_503_is_reported(make_settings):
    """The one finding left by design: a model the server must fetch from a registry it cannot reach is a 503."""
    with ThreadedDaemon(_settings(make_settings, "http://127.0.0.1:9")) as daemon:
        done = _schemathesis(daemon.url)
    report = done.stdout
    summary = report[report.rindex("Failures:"):] if "Failures:" in report else ""
    assert re.findall(r"❌ (ST\d+)", summary) == ["ST101"], report[-8000:]
    statuses = set(re.findall(r"^\[(\d{3})\] ", report, re.MULTILINE))
    assert statuses == {"503"}, report[-8000:]
    messages = re.findall(r'^\s+`\{"(?:message|success)".*\}`$', report, re.MULTILINE)
    assert messages and all(REGISTRY_DOWN in message for message in messages), report[-8000:]
