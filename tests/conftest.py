"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

# dataset files in the real formats and the fixtures that isolate the readers
pytest_plugins = ["datasets_files"]


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one intra-op thread: small problems only pay overhead
    (and contend with each other) when torch fans out across cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
