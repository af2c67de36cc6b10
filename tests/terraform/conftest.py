"""Fixtures for the Terraform checks: the repository's terraform/ tree and throwaway modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.terraform.hcl import TERRAFORM_DIR

WriteModule = Callable[[Mapping[str, str]], Path]


@pytest.fixture
def terraform_root() -> Path:
    """The repository's terraform/ directory (it may hold no .tf file yet)."""
    return TERRAFORM_DIR


@pytest.fixture
def write_module(tmp_path: Path) -> WriteModule:
    """Write ``{relative path: HCL text}`` under a fresh directory in tmp_path and return it."""
    counter = iter(range(1_000_000))

    def write(files: Mapping[str, str]) -> Path:
        root = tmp_path / f"module{next(counter)}"
        for name, text in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        root.mkdir(parents=True, exist_ok=True)
        return root

    return write
