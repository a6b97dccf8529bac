# Copyright (c) mmbcn contributors. All rights reserved.
"""Tables of experiment results: CSV for machines, markdown for the
README."""
import csv
import os
from typing import Dict, List, Optional, Sequence

from mmbcn.utils import atomic_outputs, markdown_table


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


def write_report(stem: str,
                 rows: List[Dict],
                 columns: Sequence[str],
                 table_rows: Optional[List[Dict]] = None) -> str:
    """Write ``rows`` to ``stem.csv`` and ``table_rows`` (default: ``rows``)
    to ``stem.md``, creating the folder; both files complete or neither.
    Returns the markdown table."""
    os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
    table = markdown_table(columns, rows if table_rows is None else
                           table_rows, cell=_text) + '\n'
    with atomic_outputs(stem + '.csv', stem + '.md') as (csv_tmp, md_tmp):
        write_csv(csv_tmp, rows, columns)
        with open(md_tmp, 'w') as f:
            f.write(table)
    return table
