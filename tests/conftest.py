from __future__ import annotations

import pytest

from tests.fakeserver import FakeLLMServer


@pytest.fixture
def fake_server():
    server = FakeLLMServer().start()
    yield server
    server.stop()
