"""The one reader of JSON that comes from users: config.list, --set values and the metadata
embedded in model files. Python's json module recurses once per nesting level (100,000 `[` end
in RecursionError) and holds the whole text, so size and depth are checked before it parses.

The bounds are far above what segtrain writes or a person types: a config is a few KB, nested
three levels ({"image_size": [h, w]}), and a model file's metadata holds a config plus up to
254 class names and colours (tens of KB, four levels).
"""

from __future__ import annotations

import json
import re
from typing import Any

from segtrain.errors import ConfigError

MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 20
# A string (its brackets do not nest), or one bracket.
_TOKENS = re.compile(r'"(?:[^"\\]+|\\.)*"|[\[\]{}]')


def _too_deep(text: str) -> bool:
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def check_json_bounds(text: str, source: str, error: type[Exception] = ConfigError) -> None:
    """Refuse, in one line, a text too large or too deeply nested to parse safely."""
    if len(text) > MAX_JSON_BYTES:
        raise error(f"{source}: {len(text):,} characters of JSON; at most {MAX_JSON_BYTES:,} are read "
                    "(segtrain writes a few KB). Use the file segtrain wrote, or shorten it.")
    if _too_deep(text):
        raise error(f"{source}: JSON nested more than {MAX_JSON_DEPTH} levels deep (segtrain's files nest at most "
                    "four). Remove the extra brackets.")


def loads(text: str, source: str, error: type[Exception] = ConfigError) -> Any:
    """json.loads within the bounds; json.JSONDecodeError passes through for the caller to place."""
    check_json_bounds(text, source, error)
    return json.loads(text)
