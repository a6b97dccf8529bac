# Copyright (c) mmbcn contributors. All rights reserved.
"""Tables of experiment results: CSV for machines, markdown for the
README."""
import csv
import os
from typing import Dict, List, Optional, Sequence


def _text(value) -> str:
    if isinstance(value, float):
        return f'{value:.4f}'
    return str(value)


def write_csv(path: str, rows: List[Dict], columns: Sequence[str]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _text(row[c]) for c in columns})


def markdown_table(rows: List[Dict], columns: Sequence[str]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |',
             '|' + '|'.join('---' for _ in columns) + '|']
    for row in rows:
        lines.append('| ' + ' | '.join(_text(row[c]) for c in columns) +
                     ' |')
    return '\n'.join(lines) + '\n'


def write_report(stem: str,
                 rows: List[Dict],
                 columns: Sequence[str],
                 table_rows: Optional[List[Dict]] = None) -> str:
    """Write ``rows`` to ``stem.csv`` and ``table_rows`` (default: ``rows``)
    to ``stem.md``, creating the folder; returns the markdown table."""
    os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
    write_csv(stem + '.csv', rows, columns)
    table = markdown_table(rows if table_rows is None else table_rows,
                           columns)
    with open(stem + '.md', 'w') as f:
        f.write(table)
    return table
