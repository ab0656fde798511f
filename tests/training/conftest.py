"""Fixtures of the training tests: one tiny generated dataset per session."""

import pytest

from tests.tiny_gzsl import load_tiny, make_tiny


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("training-data"))


@pytest.fixture(scope="session")
def tiny_data(tiny_root):
    return load_tiny(tiny_root)
