"""Shared fixtures: tiny LymphoMNIST-shaped data sets written by the tests themselves."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest


def write_tiny_lymphomnist(
    root: Path, n_train: int = 30, n_test: int = 24, seed: int = 0, provenance: dict | None = None, gz: bool = False
) -> Path:
    """Write the four IDX files (and optionally provenance.json) under ROOT/LymphoMNIST."""
    from lymphosort.data.idx import write_idx

    rng = np.random.default_rng(seed)
    raw = root / "LymphoMNIST" / "raw"
    for which, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 3).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8)
        images[:, 0, 0] = labels * 100  # a pixel that names the class, to check pairing
        suffix = ".gz" if gz else ""
        write_idx(raw / f"{which}_images{suffix}", images)
        write_idx(raw / f"{which}_labels{suffix}", labels)
    if provenance is not None:
        (root / "LymphoMNIST" / "provenance.json").write_text(json.dumps(provenance))
    return raw


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A tiny simulated LymphoMNIST root (30 train, 24 test images)."""
    root = tmp_path / "root"
    write_tiny_lymphomnist(root, provenance={"source": "simulated", "preset": "test", "seed": 0})
    return root


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every socket connection that is not to the loopback interface."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo
    loopback = ("127.0.0.1", "::1", "localhost")

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in loopback:
            raise OSError(f"test tried to reach {host!r}; tests stay offline")
        return real_connect(self, address)

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        if host not in loopback:  # fail like an offline resolver, without waiting for DNS
            raise socket.gaierror(socket.EAI_NONAME, f"offline test: no DNS for {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
