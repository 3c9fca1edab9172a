"""Asset lookup: local folder, cache, real downloads from a loopback HTTP server, checksums."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from onepixel import assets
from onepixel.errors import AssetError, ChecksumError

PAYLOAD = b"onepixel test asset\n" * 100


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(assets.ENV_CACHE, str(folder))
    monkeypatch.delenv(assets.ENV_ASSETS, raising=False)
    return folder


@pytest.fixture()
def server(tmp_path):
    """A real HTTP server on loopback serving files from a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "good.bin").write_bytes(PAYLOAD)
    (root / "bad.bin").write_bytes(PAYLOAD + b"tampered")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _asset(url: str) -> assets.Asset:
    return assets.Asset("test/good.bin", hashlib.sha256(PAYLOAD).hexdigest(), (url,), len(PAYLOAD))


def test_download_verifies_and_caches(server, cache):
    path = assets.ensure(_asset(f"{server}/good.bin"))
    assert path == cache / "test" / "good.bin"
    assert path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob("*.part"))
    # A second call uses the cache (the server is not needed any more).
    assert assets.ensure(_asset("http://127.0.0.1:9/unreachable")) == path


def test_download_with_wrong_checksum_is_refused(server, cache):
    asset = _asset(f"{server}/bad.bin")
    with pytest.raises(ChecksumError) as info:
        assets.ensure(asset)
    msg = str(info.value)
    assert asset.sha256 in msg and hashlib.sha256(PAYLOAD + b"tampered").hexdigest() in msg
    assert not (cache / "test" / "good.bin").exists()
    assert not list((cache / "test").glob("*"))


def test_fallback_to_second_url(server, cache):
    asset = assets.Asset("test/good.bin", hashlib.sha256(PAYLOAD).hexdigest(),
                         (f"{server}/missing.bin", f"{server}/good.bin"))
    assert assets.ensure(asset).read_bytes() == PAYLOAD


def test_offline_error_names_url_and_destination(cache):
    asset = _asset("http://127.0.0.1:9/good.bin")
    with pytest.raises(AssetError) as info:
        assets.ensure(asset)
    msg = str(info.value)
    assert "http://127.0.0.1:9/good.bin" in msg
    assert str(cache / "test" / "good.bin") in msg


def test_local_folder_wins_and_is_verified(tmp_path, cache, true_png):
    folder = tmp_path / "assets"
    (folder / "max-mitosis").mkdir(parents=True)
    shutil.copy(true_png, folder / "max-mitosis" / "true.png")
    assert assets.ensure("true.png", folder) == folder / "max-mitosis" / "true.png"
    (folder / "max-mitosis" / "true.png").write_bytes(b"not the png")
    with pytest.raises(ChecksumError) as info:
        assets.ensure("true.png", folder)
    assert "max-mitosis/true.png" in str(info.value)
    assert assets.REGISTRY["max-mitosis/true.png"].sha256 in str(info.value)


def test_corrupt_cache_entry_is_an_error(cache):
    entry = cache / Path("max-mitosis/false.png")
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"garbage")
    with pytest.raises(ChecksumError, match="false.png"):
        assets.ensure("false.png", download=False)


def test_unknown_asset_lists_known_names():
    with pytest.raises(AssetError, match="max-mitosis"):
        assets.lookup("no-such-asset")


def test_registry_matches_shared_folder(max_model_path):
    root = max_model_path.parents[1]
    for name, asset in assets.REGISTRY.items():
        path = root / asset.relpath
        if path.exists():
            assert assets.sha256_of(path) == asset.sha256, name
            assert path.stat().st_size == asset.size, name
