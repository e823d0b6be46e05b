"""Fixtures: a fresh, real latchkey per test (own SQLite database in a temporary directory).

The generated vendor clients must be importable (`.ci/vendor-clients` generates them and puts them on
PYTHONPATH); a missing one is a collection error, never a skip.
"""

from __future__ import annotations

import pytest

import support


@pytest.fixture
def server():
    s = support.start_server()
    try:
        yield s
    finally:
        log = s.lk.log_tail(60)
        s.lk.cleanup()
        # Shown by pytest only when the test failed.
        print(f"--- latchkey log (tail) ---\n{log}")


@pytest.fixture
def phone(tmp_path):
    return support.Phone(tmp_path)
