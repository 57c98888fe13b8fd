"""Per-file error lines on stderr, capped: a zip of 5,000 broken files gives 20 lines and a count, not 5,000."""

from __future__ import annotations

import sys

from cellkit.errors import named

MAX_FILE_ERRORS = 20  # lines printed; every failed file is still a row of the command's output
CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}  # shown escaped


class FileErrors:
    """Call it once per failed file; ``close()`` prints one line for those beyond ``limit``."""

    def __init__(self, where: str, limit: int = MAX_FILE_ERRORS) -> None:
        self.where, self.limit, self.count = where, limit, 0

    def __call__(self, name: str, error: str) -> None:
        from tqdm import tqdm

        self.count += 1
        if self.count <= self.limit:  # one line each: a newline in a file name never starts a fake line
            text = named(name, error).translate(CONTROL)
            tqdm.write(f"error: {text}", file=sys.stderr)

    def close(self) -> None:
        if self.count > self.limit:
            more = f"{self.count - self.limit} more file(s) failed ({self.count} in all)"
            print(f"error: {more}; each is listed with its error in {self.where}", file=sys.stderr)
