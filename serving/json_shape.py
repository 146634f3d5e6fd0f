"""Count what a JSON request body would build, while it streams in and before it is parsed.

Parsing 50 MB of ``{"voters": [{}, {}, ...]}`` builds about 17 million Python objects
before any limit on the parsed request can answer. :class:`JsonShape` reads the body's
bytes as they arrive and counts, without building anything:

- the items of every list or object at the first two levels (the request object's
  fields, and e.g. the voters of ``voters``), and
- every value in the document (each item of each list or object at any depth),

so a body over a limit is refused after reading only as much of it as it takes to cross
the limit. The scan is vectorized over each chunk (numpy), with the state between chunks
carried over: inside a string or not, a pending backslash run, the nesting depth and the
items of the open list. Quotes escaped by a backslash are recognized; text inside strings
never counts. The counts are exact for valid JSON; for invalid JSON they are whatever the
bytes say, and the parser refuses the body afterwards.

Examples
--------
>>> shape = JsonShape(max_items=2, max_values=100)
>>> shape.feed(b'{"voters": [{"voter_id": "a,b"}, {}')
>>> shape.feed(b', {}]}')
'items'
"""

from __future__ import annotations

import numpy as np

SLICE = 1 << 18  # bytes scanned at once: bounds the scan's own memory
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPENS = (ord("{"), ord("["))
_CLOSES = (ord("}"), ord("]"))


class JsonShape:
    """Streaming counts of a JSON document's items and values (see the module docstring).

    Parameters
    ----------
    max_items : int
        Most items in any one list or object at the first two levels of nesting.
    max_values : int
        Most values in the whole document.
    """

    def __init__(self, *, max_items: int, max_values: int):
        self.max_items = max_items
        self.max_values = max_values
        self.depth = 0  # nesting depth after the bytes seen so far
        self.in_string = False
        self.backslashes = 0  # length of the backslash run that ended the last chunk
        self.commas = [0, 0]  # commas seen in the open container at depth 1 and at depth 2
        self.values = 0

    def feed(self, chunk: bytes) -> str | None:
        """Scan the next bytes; ``"items"`` or ``"values"`` once that limit is crossed, else None."""
        for start in range(0, len(chunk), SLICE):
            crossed = self._scan(np.frombuffer(chunk, dtype=np.uint8, count=min(SLICE, len(chunk) - start),
                                               offset=start))
            if crossed:
                return crossed
        return None

    def _scan(self, a: np.ndarray) -> str | None:
        quote = a == _QUOTE
        if self.backslashes or (a == _BACKSLASH).any():
            quote = self._unescaped(a, quote)
        # only quotes, commas, braces and brackets matter: scan those (a fifth of a typical body)
        keep = np.flatnonzero(quote | (a == _COMMA) | (a == _OPENS[0]) | (a == _OPENS[1])
                              | (a == _CLOSES[0]) | (a == _CLOSES[1]))
        if not len(keep):
            return None
        b = a[keep]
        toggles = np.cumsum(quote[keep], dtype=np.int32) + self.in_string
        self.in_string = bool(toggles[-1] & 1)
        outside = (toggles & 1) == 0  # a structural byte is never a quote: even count = outside a string
        opens = ((b == _OPENS[0]) | (b == _OPENS[1])) & outside
        closes = ((b == _CLOSES[0]) | (b == _CLOSES[1])) & outside
        commas = (b == _COMMA) & outside
        depth = np.cumsum(opens.astype(np.int32) - closes) + self.depth  # depth after each byte
        self.depth = int(depth[-1])
        self.values += int(np.count_nonzero(opens)) + int(np.count_nonzero(commas))
        if self.values >= self.max_values:
            return "values"
        for level in (1, 2):  # a comma at depth d separates items of the container at depth d
            if self._items_crossed(level, opens & (depth == level), commas & (depth == level)):
                return "items"
        return None

    def _items_crossed(self, level: int, starts: np.ndarray, commas: np.ndarray) -> bool:
        """Count commas per container opened at ``level`` (the first continues the carried one)."""
        carried = self.commas[level - 1]
        if not starts.any():
            self.commas[level - 1] = carried + int(np.count_nonzero(commas))
            return self.commas[level - 1] >= self.max_items
        container = np.cumsum(starts)  # 0: the container open before this chunk, k: the k-th opened here
        counts = np.bincount(container[commas], minlength=int(container[-1]) + 1)
        counts[0] += carried
        self.commas[level - 1] = int(counts[-1])
        return int(counts.max()) >= self.max_items  # n commas: n + 1 items

    def _unescaped(self, a: np.ndarray, quote: np.ndarray) -> np.ndarray:
        """``quote`` without the quotes preceded by an odd run of backslashes (carried across chunks)."""
        backslash = a == _BACKSLASH
        carry = self.backslashes
        index = np.arange(len(a))
        last_other = np.maximum.accumulate(np.where(backslash, -1, index))  # last non-backslash at or before i
        self.backslashes = len(a) + carry if last_other[-1] < 0 else len(a) - 1 - int(last_other[-1])
        at = np.flatnonzero(quote)
        if not len(at):
            return quote
        before = np.maximum(at - 1, 0)
        run = np.where(at > 0, at - 1 - last_other[before], 0)
        run = np.where((at == 0) | (last_other[before] < 0), run + carry, run)  # the run began in an earlier chunk
        out = quote.copy()
        out[at[run % 2 == 1]] = False
        return out
