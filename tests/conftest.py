"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks gain nothing from a second thread, and on a busy 2-core machine two threads
    per op make every step wait on the scheduler (measured: 15x slower under load).

    Module-scoped: a module that wants it for all its tests says
    `pytestmark = pytest.mark.usefixtures("one_thread")`; a fixture or test that names it gets one
    thread from then until the end of its module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_classroom():
    """Every test starts with a new classroom (no rules, no data folder), as after a server
    start: the app keeps it in st.cache_resource, which outlives one AppTest in this process."""
    from app_pages import common

    common.cached_classroom.clear()
    yield
    common.cached_classroom.clear()
