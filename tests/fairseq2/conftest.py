"""The fairseq2 drop-in's tests run only where fairseq2 and omnilingual-asr are installed
(``scripts/check_fairseq2.sh`` builds that environment and runs them); elsewhere, as in CI,
their modules skip. ``f2_report`` collects each test's figures and, when
``$DALI_ASR_F2_REPORT`` names a file, writes them there as JSON at the end of the session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def f2_report() -> Iterator[dict[str, Any]]:
    yield _FIGURES
    target = os.environ.get("DALI_ASR_F2_REPORT")
    if target and _FIGURES:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(_FIGURES, indent=1, sort_keys=True) + "\n")
