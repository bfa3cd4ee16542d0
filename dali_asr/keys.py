"""Example keys: every example is named by where it lives (dataset file, row group, row), so
a batch can say which examples it holds, a skipped example can be reported, and resume state
can refer to examples instead of holding their bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExampleKey:
    """Where an example lives: file (relative to the dataset root), row group, row."""

    file: str
    row_group: int
    row: int

    def __str__(self) -> str:
        return f"{self.file}:{self.row_group}:{self.row}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "row_group": self.row_group, "row": self.row}
