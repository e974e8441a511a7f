"""What ships speaks to its readers: no references to documents they do not have, and
the README's first steps say what they will see and where."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_REFERENCE = re.compile(r"\bSPEC\b(\s+section)?\s+\d")


def shipped_files() -> list[Path]:
    """Every file in the repository but the tests (which may cite the contract they check)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [ROOT / f for f in listed if not f.startswith("tests/") and (ROOT / f).is_file()]


class TestNoSpecReferences:
    """No shipped file cites "SPEC section N", a document users do not have."""

    def test_none(self) -> None:
        found = []
        for path in shipped_files():
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{n}"
                for n, line in enumerate(text.splitlines(), 1)
                if SPEC_REFERENCE.search(line)
            ]
        assert [] == found


class TestReadmeTryIt:
    """The README's "Try it" says when the resolved notification comes, and its redis-cli
    line reaches the Redis `make run` uses (a private one may be on another port)."""

    def test_timing_and_redis_address(self) -> None:
        readme = (ROOT / "README.md").read_text()
        try_it = readme[readme.index("## Try it") : readme.index("## What to edit")]
        [redis_cli] = [line for line in try_it.splitlines() if line.startswith("$ redis-cli")]

        assert "group_interval" in try_it
        assert redis_cli.startswith(
            '$ redis-cli -u "${ALERTD_REDIS_URL:-redis://127.0.0.1:6379/0}"'
        )
        assert "export ALERTD_REDIS_URL" in try_it
