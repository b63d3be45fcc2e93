"""Shared fixtures: a fresh encrypted network per test, and the chat harness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Argon2id at 256 MiB costs ~1 s per unlock; tests use a cheap cost, recorded in the slot.
# One test (test_store.py) checks the production parameters explicitly.
os.environ.setdefault("VIGIL_INSECURE_FAST_KDF", "1")

from storage.store import Store, init_network
from tests.harness import PASSPHRASE, ChatHarness, Clock

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = init_network(data_dir, PASSPHRASE)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def chat(store: Store, clock: Clock) -> ChatHarness:
    return ChatHarness(store, clock)
