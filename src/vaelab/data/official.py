"""The official files of the standard data sets: where vaelab looks for them, their published
sizes and sha256 digests, verification (cached), and downloading them when asked.

Places, in order: an explicit ``data.path`` (the only place looked at when it is set), else
``$VAELAB_<NAME>``, ``$VAELAB_DATA/<name>`` and ``cache_dir()/datasets/<name>`` (where
``data.download = true`` puts what it fetches when no path is set).

Digests are the ones TensorFlow Datasets publishes for the same URLs (its `url_checksums`);
a file without a published digest is checked by its format only. Hashing a 1.4 GB archive
takes seconds, so each file's digest is remembered in ``cache_dir()/verified.json`` by
(path, size, mtime) and computed again only when one of them changes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from ..files import write_json
from .base import cache_dir, first_place

VERIFIED = "verified.json"
CHUNK = 1 << 20
TIMEOUT = 30  # seconds without an answer before a download gives up


@dataclass(frozen=True)
class OfficialFile:
    """A file as published: its name, where to get it, its size in bytes and sha256 (None
    when no digest is published)."""

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None


# --- where the files are -------------------------------------------------------------------


def places(name: str, env: str, cfg: DataConfig) -> list[tuple[str, str | None]]:
    """The labelled candidate places of data set `name` (see the module docstring)."""
    if cfg.path is not None:
        return [("data.path", cfg.path)]
    root = os.environ.get("VAELAB_DATA")
    return [
        (f"${env}", os.environ.get(env)),
        (f"$VAELAB_DATA/{name}", root and os.path.join(root, name)),
        (str(download_dir(name)), str(download_dir(name))),
    ]


def download_dir(name: str) -> Path:
    return cache_dir() / "datasets" / name


def find(
    name: str,
    env: str,
    cfg: DataConfig,
    why_not: Callable[[Path], str | None],
    needed: str,
    files: Sequence[OfficialFile] = (),
    also: Sequence[tuple[str, str | None]] = (),
) -> Path:
    """The first place that holds data set `name` (`why_not(place)` is None; `also`: more
    labelled places looked at last, when no path is set), fetching `files` first when none
    does and ``cfg.download`` is set; else one line saying where vaelab looked and what to
    put where (`needed`: which files)."""
    candidates = places(name, env, cfg) + ([] if cfg.path is not None else list(also))
    found, report = first_place(candidates, why_not)
    if found is not None:
        return found
    if cfg.download and files:
        target = Path(cfg.path).expanduser() if cfg.path is not None else first_set(candidates)
        if target.is_file() or target.name in {f.name for f in files}:
            target = target.parent  # a file's path: its folder receives the files
        for file in files:
            if not (target / file.name).is_file():
                download(name, file, target / file.name)
        missing = why_not(target)
        if missing is None:
            return target
        raise DataError(f"{name}: downloaded into {target}, but it is still not usable ({missing})")
    urls = ", ".join(sorted({f.url for f in files})) if files else ""
    get = f" from {urls}" if urls else ""
    fetch = " (or set data.download=true)" if files else ""
    raise DataError(
        f"{name}: not found; looked in: {'; '.join(report)}. Put {needed}{get} into a folder "
        f"and set data.path=FOLDER or {env}=FOLDER{fetch}"
    )


def locate_file(dataset: str, env: str, cfg: DataConfig, file: OfficialFile) -> Path:
    """The one official `file` of `dataset`, verified; ``data.path`` (or a place) may be the
    file itself or a folder holding it."""

    def file_at(place: Path) -> Path | None:
        if place.is_file():
            return place
        return place / file.name if (place / file.name).is_file() else None

    def why_not(place: Path) -> str | None:
        if file_at(place) is not None:
            return None
        return f"no {file.name}" if place.is_dir() else "no such file or folder"

    path = file_at(find(dataset, env, cfg, why_not, file.name, [file]))
    verify(path, file, dataset, cfg)
    return path


def first_set(candidates: list[tuple[str, str | None]]) -> Path:
    """The first candidate place that is set (the download target when no path is given)."""
    return next(Path(p).expanduser() for _, p in candidates if p)


# --- verification --------------------------------------------------------------------------


def verify(path: Path, official: OfficialFile, dataset: str, cfg: DataConfig) -> None:
    """One line (DataError) unless `path` has the official size and sha256 (when published
    and ``cfg.verify``): a wrong size is reported before anything is hashed."""
    if not cfg.verify or official.size is None and official.sha256 is None:
        return
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{dataset}: cannot read {path} ({exc.strerror or exc})") from None
    again = f"get it again from {official.url}, or set data.verify=false for a file you made"
    if official.size is not None and size != official.size:
        what = "truncated" if size < official.size else "longer than the official file"
        raise DataError(
            f"{dataset}: {path} has {size:,} bytes but the official {official.name} has "
            f"{official.size:,} ({what}); {again}"
        )
    if official.sha256 is not None:
        digest = sha256_of(path)
        if digest != official.sha256:
            raise DataError(
                f"{dataset}: {path} has sha256 {digest[:16]}…, not the published "
                f"{official.sha256[:16]}… of {official.name} (corrupt or a different file); "
                f"{again}"
            )


def sha256_of(path: Path) -> str:
    """The file's sha256, from ``verified.json`` when its path, size and mtime are unchanged."""
    entry = _read_cache().get(str(path.resolve()))
    if isinstance(entry, dict) and {k: entry.get(k) for k in _stamp(path)} == _stamp(path):
        if isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    remember(path, digest.hexdigest())
    return digest.hexdigest()


def remember(path: Path, digest: str) -> None:
    """Record `path`'s digest with its size and mtime in ``verified.json`` (atomically)."""
    known = _read_cache()  # re-read: another process may have added entries meanwhile
    known[str(path.resolve())] = _stamp(path) | {"sha256": digest}
    write_json(cache_dir() / VERIFIED, known)


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_cache() -> dict:
    try:
        known = json.loads((cache_dir() / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: digests are computed again
    return known if isinstance(known, dict) else {}


# --- downloading ---------------------------------------------------------------------------


def download(dataset: str, official: OfficialFile, target: Path) -> None:
    """Fetch `official` into `target` through a temporary file beside it, hashed as it
    arrives and renamed into place only when its size and sha256 are the published ones;
    without a network, one line naming the URL and where to put the file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(official.url, timeout=TIMEOUT) as answer:
                    while block := answer.read(CHUNK):
                        digest.update(block)
                        size += out.write(block)
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts
                reason = getattr(exc, "reason", None) or exc
                raise DataError(
                    f"{dataset}: cannot download {official.url} ({reason}); download it "
                    f"yourself and put it at {target}"
                ) from None
        wrong_size = official.size is not None and size != official.size
        if wrong_size or official.sha256 not in (None, digest.hexdigest()):
            raise DataError(
                f"{dataset}: the download of {official.url} is not the published file "
                f"({size:,} bytes, sha256 {digest.hexdigest()[:16]}…); try again later"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data folder may be shared
        os.replace(tmp, target)
        remember(target, digest.hexdigest())
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- shared checks -------------------------------------------------------------------------


def native_size(dataset: str, cfg: DataConfig, side: int) -> None:
    """One line when ``data.image_size`` asks a data set of fixed-size images for another."""
    if cfg.image_size is not None and cfg.image_size != side:
        raise DataError(
            f"{dataset}: its images are {side}×{side}; data.image_size={cfg.image_size} "
            "applies to celeba and image-folder only"
        )


def no_valid_split(dataset: str, cfg: DataConfig) -> None:
    """One line when ``data.test_split = "valid"`` is asked of a set without one."""
    if cfg.test_split != "test":
        raise DataError(
            f"{dataset}: has no official validation split; data.test_split=valid applies to "
            "celeba and binarized-mnist (.amat files)"
        )


def held_out(n: int, size: int = 10_000) -> int:
    """Test-set size of a data set without an official split: `size`, or a tenth of a set
    smaller than 10·`size` (at least 1)."""
    return min(size, max(1, n // 10))
