"""What the sandbox test modules share: the isolation skip mark and stopping the warm server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lai import sandbox

needs_isolation = pytest.mark.skipif(
    not sandbox.isolation_available(),
    reason=f"isolated sandbox unavailable here: {sandbox.isolation_problem()}",
)


@pytest.fixture(autouse=True, scope="module")
def stop_zygotes() -> Iterator[None]:
    """The sandbox's server would exit after idling anyway; stop it after each module, not seconds later."""
    yield
    sandbox._Zygote.stop_all()
