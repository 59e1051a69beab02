"""One way to reject a misspelt name everywhere: say which, suggest the closest, list the valid ones."""
from __future__ import annotations

import difflib
from typing import Iterable


def check_names(given: Iterable[str], valid: Iterable[str], what: str, error: type[Exception] = ValueError) -> None:
    valid = list(valid)
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, valid, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise error(f"unknown {what} {', '.join(hints)}; valid: {', '.join(valid)}")
