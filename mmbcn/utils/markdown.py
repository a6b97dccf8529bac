# Copyright (c) mmbcn contributors. All rights reserved.
"""Markdown tables for reports (standard library only)."""
from typing import Any, Callable, Mapping, Sequence, Union

Row = Union[Sequence[Any], Mapping[str, Any]]


def markdown_table(header: Sequence[str], rows: Sequence[Row],
                   cell: Callable[[Any], str] = str) -> str:
    """A markdown table with ``header``; each row a sequence of cells in
    header order or a mapping from header names to cells, each cell
    written by ``cell``. No trailing newline."""
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    for row in rows:
        cells = ([row[name] for name in header]
                 if isinstance(row, Mapping) else row)
        lines.append('| ' + ' | '.join(cell(c) for c in cells) + ' |')
    return '\n'.join(lines)
