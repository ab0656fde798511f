"""Shared fixtures: every test starts from a fixed seed."""

import numpy as np
import pytest
import torch

# Tiny tensors run far faster on one thread, and a second thread only contends with
# whatever else the 2-core machine is running.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
