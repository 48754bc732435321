"""The dashboard's third-party assets ship in the package at their pinned versions,
with their licences (scripts/vendor_web_assets fetches them), and the package data
covers every file the dashboard serves."""

import fnmatch
import hashlib
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "pulse" / "web"
VENDOR = WEB / "static" / "vendor"


def test_vendored_files_are_the_pinned_releases_byte_for_byte():
    doc = json.loads((VENDOR / "VENDORED.json").read_text())
    assert doc["packages"] == {"chart.js": "4.6.1", "swagger-ui-dist": "5.35.0"}
    for name, digest in doc["sha256"].items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert b"Chart.js v4.6.1" in (VENDOR / "chart.umd.min.js").read_bytes()[:100]


def test_each_vendored_package_comes_with_its_licence():
    assert "MIT License" in (VENDOR / "chart.js.LICENSE.md").read_text()
    assert "Apache License" in (VENDOR / "swagger-ui.LICENSE").read_text()


def test_the_package_data_covers_every_file_the_dashboard_serves():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pulse.web"]
    files = [p.relative_to(WEB).as_posix() for p in WEB.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files
    uncovered = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert uncovered == []
