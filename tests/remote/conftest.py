"""Real servers on 127.0.0.1 for the remote tests: the Range server of server.py and moto's S3 API server."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from statecli.io import source

from .server import Behaviour, RangeServer


@pytest.fixture(scope="session")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="session")
def _http(http_root: Path) -> Iterator[RangeServer]:
    with RangeServer(str(http_root)) as srv:
        yield srv


@pytest.fixture
def http(_http: RangeServer) -> Iterator[RangeServer]:
    """The server with default behaviour, an empty log and statecli's caches cleared."""
    _http.behaviour = Behaviour()
    _http.log.reset()
    source.clear_cache()
    source.STATS.reset()
    yield _http
    _http.behaviour = Behaviour()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def _moto() -> Iterator[str]:
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the backend's standard credential chain: the environment
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3(_moto: str) -> Iterator[object]:
    """An s3fs file system on the moto server with a fresh bucket `ckpt`."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=_moto, key="testing", secret="testing-secret-key")
    if fs.exists("ckpt"):
        fs.rm("ckpt", recursive=True)
    fs.mkdir("ckpt")
    fs.invalidate_cache()
    source.clear_cache()
    source.STATS.reset()
    yield fs
    fs.invalidate_cache()
