"""Rewrite the configuration table in README.md from edge_daemon/config.py's option definitions."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_daemon.config import markdown_reference

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE = re.compile(r"\| flag \| environment \| default \| meaning \|\n(?:\|.*\|\n)+")

text = README.read_text(encoding="utf-8")
updated, count = TABLE.subn(markdown_reference().replace("\\", "\\\\") + "\n", text)
if count != 1:
    raise SystemExit("README.md has no configuration table to replace")
README.write_text(updated, encoding="utf-8")
print("README.md configuration table updated")
