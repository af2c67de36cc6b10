"""``python -m functions.package lock``: regenerate the pinned requirement files."""

from __future__ import annotations

import sys

from functions.package.locks import write_lock_files

if sys.argv[1:] != ["lock"]:
    sys.exit("usage: python -m functions.package lock")
for path in write_lock_files():
    print(path)
