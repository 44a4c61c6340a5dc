"""docs/ui.md: its config blocks load, and every screenshot it shows is in docs/ui/."""

from __future__ import annotations

import re

from crossway.config import parse_config
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "ui.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
PAGES = ("overview", "models", "keys", "logs", "mcp", "a2a", "guardrails", "config")


def test_config_blocks_load() -> None:
    assert BLOCKS
    for block in BLOCKS:
        config = parse_config(block, "docs/ui.md", env={"CROSSWAY_ADMIN_TOKEN": "t" * 32})
        assert config.admin.protected


def test_every_screenshot_exists_and_each_page_has_one() -> None:
    shown = set(re.findall(r"\(ui/([a-z0-9-]+\.png)\)", DOC))
    missing = [name for name in shown if not (ROOT / "docs" / "ui" / name).is_file()]
    assert not missing
    for page in PAGES:
        assert f"{page}.png" in shown, page
        assert (ROOT / "docs" / "ui" / f"{page}-phone.png").is_file(), page
