"""``python -m tooling.package lock``: regenerate the pinned requirement files."""

from __future__ import annotations

import sys

from tooling.package.locks import write_lock_files

if sys.argv[1:] != ["lock"]:
    sys.exit("usage: python -m tooling.package lock")
for path in write_lock_files():
    print(path)
