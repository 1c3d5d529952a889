"""docs/configuration.md, written from the key table itself (config/load.py KEYS), so that the
reference cannot drift from the code:

    python -m segtrain.config.reference > docs/configuration.md

tests/test_docs.py fails when the file in docs/ differs from what this writes.
"""

from __future__ import annotations

import json

from segtrain.config.load import KEYS

HEADER = """# Configuration reference

Every key of `config.list` (a JSON object in the data folder; all keys optional) and of
`segtrain train --set KEY=VALUE`, with its default and meaning. A default of `null` is decided when
training starts, as the meaning says; `segtrain init` prints what it will be for your folder.
The original tool's keys (`max_iteration`, `lr`, `momentum`, `weight_decay`, `interval_validate`,
`batch_size`, `backbone`, `fcn`, `output_dir`, `pretrained_net`, `n_workers`, `mode`) keep working.

This page is generated from the code (`python -m segtrain.config.reference`); the user guide
([guide.md](guide.md)) explains how the keys work together.

| key | default | meaning |
| --- | --- | --- |
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    rows = [f"| `{key}` | `{json.dumps(default)}` | {_cell(meaning)} |" for key, (default, meaning) in KEYS.items()]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
