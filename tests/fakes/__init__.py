"""Fake provider APIs served over real HTTP on 127.0.0.1 (contract and end-to-end tests).

Import as `fakes.vast_server` / `fakes.runpod_server` once `tests/` is on sys.path (tests/provider_adapters/conftest.py
puts it there). Both fakes take `on_create(instance_id, env, public_key) -> (host, port)` and
`on_destroy(instance_id)` hooks so end-to-end tests can back an "instance" with a real sshd.
"""

from ._server import FakeAPI, Reply, Request

__all__ = ["FakeAPI", "Reply", "Request"]
