"""Shared fixtures: every test starts from a fixed seed."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
