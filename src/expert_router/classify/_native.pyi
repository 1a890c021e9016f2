"""Types of the classifier's C hot path (``_native.c``)."""

from typing import Any

import numpy.typing as npt

def vocabulary_table(vocabulary: dict[bytes, int], /) -> object: ...
def term_ids(text: str, table: object, /) -> tuple[list[int], list[str] | None] | None: ...
def distances(
    rows: npt.NDArray[Any], ids: list[int], dims: int, csq1: tuple[float, ...], /
) -> tuple[float, ...] | None: ...
