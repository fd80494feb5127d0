"""Image sets read from disk as they are needed, and the choice between that and decoding a
whole set into memory up front.

`StreamedImages` keeps only the list of its items (files, zip members, …) and a `decode`
function item → uint8 [C, H, W]; its `batches` are decoded by `DataLoader` worker processes in
the order asked for, read ahead (`prefetch_factor` batches per worker) and, for a GPU, pinned
and copied without blocking (`worker_count`: how many; 0 decodes in the main process between
steps). The trainer's data order is a function of (seed, epoch) either way, so a streamed run
is bit-identical to the in-memory one and resumes as exactly.

`data.storage`: "memory" decodes up front, "stream" streams, "auto" (default) keeps a set in
memory when its decoded uint8 size is at most `MEMORY_FRACTION` of the memory available now.

`data.decoded_cache` (a folder) makes a streamed set decode each image once, into one uint8
file there, and stream its rows from that file afterwards (`with_decoded_cache`): reading a
row costs microseconds where decoding a PNG or JPEG costs a tenth of a millisecond or more,
which on a machine whose cores all train is taken from training. The file is found again by
a key of what the images are made from, and written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from ..files import atomic_writer
from .base import ImageSet, to_device, to_float

MEMORY_FRACTION = 0.25  # auto: in memory when the decoded set takes ≤ this share of free RAM
PREFETCH = 4  # batches each worker decodes ahead


def available_memory() -> int:
    """Bytes of memory available now (Linux: MemAvailable; else the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def keep_in_memory(cfg: DataConfig, n: int, shape: Sequence[int]) -> bool:
    """`data.storage` for a set of n images of `shape` (C, H, W) stored as uint8."""
    if cfg.storage != "auto":
        return cfg.storage == "memory"
    return n * math.prod(shape) <= MEMORY_FRACTION * available_memory()


def decode_all(
    items: Sequence[Any], decode: Callable[[Any], Tensor], shape: Sequence[int], what: str
) -> Tensor:
    """uint8 [n, *shape] of every item, decoded into one preallocated tensor (a list of the
    decoded images stacked afterwards would hold the set twice at its peak); a progress bar
    from 5,000 items."""
    images = torch.empty((len(items), *shape), dtype=torch.uint8)
    bar = tqdm(items, desc=what, unit="img", disable=len(items) < 5000, leave=False)
    for i, item in enumerate(bar):
        images[i] = decode(item)
    return images


def worker_count(workers: int | str, target: torch.device) -> int:
    """`data.workers`: a number as given; "auto": 2 when batches go to a GPU, else the cores
    torch's threads leave free, at least 1 and at most 2. Where every core trains, one worker
    decodes in the training's serial stretches; more take cores from training threads, which
    the others then wait for at the end of every parallel operation (`benchmarks/streaming.py`
    on 2 cores, 25,000 images, 5 repeats: the trainer waits 0.19 ms per image for batches
    decoded in the main process, 0.05 with one worker; images/s over the rate decoding alone
    predicts 1.00 [0.80, 1.20] with none, 1.01 [0.81, 1.22] with one, 0.92 [0.78, 1.06] with
    two)."""
    if workers != "auto":
        return int(workers)
    if target.type != "cpu":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2, max(1, (cores or 1) - torch.get_num_threads()))


class _Unreadable(str):
    """A worker's DataError message, passed back as a value: re-raised in the main process
    as the one line it is (a worker's exception would arrive with its traceback as text)."""


class _Decoded(Dataset):
    def __init__(self, items: Sequence[Any], decode: Callable[[Any], Tensor]):
        self.items, self.decode = items, decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tensor | _Unreadable:
        try:
            return self.decode(self.items[i])
        except DataError as exc:
            return _Unreadable(str(exc))


def _stack(images: list[Tensor | _Unreadable]) -> Tensor | _Unreadable:
    """The batch, or the first unreadable image's message."""
    for image in images:
        if isinstance(image, _Unreadable):
            return image
    return torch.stack(images)


class StreamedImages(ImageSet):
    """Images decoded from `items` when asked for; labels and factors in memory (as in
    `ImageData`, whose interface it shares for training, evaluation and reports)."""

    def __init__(
        self,
        name: str,
        items: Sequence[Any],
        decode: Callable[[Any], Tensor],
        shape: tuple[int, int, int],
        labels: Tensor | None = None,
        factors: Tensor | None = None,
        factor_names: tuple[str, ...] = (),
        workers: int | str = "auto",
        binary: bool = False,
        target: torch.device | None = None,
    ):
        self.name, self.items, self.decode = name, list(items), decode
        self.shape, self.labels, self.factors = tuple(shape), labels, factors
        self.factor_names, self.workers, self.binary = factor_names, workers, binary
        self.target = target or torch.device("cpu")  # where batches go

    device = torch.device("cpu")  # indices and items stay on the host

    def __len__(self) -> int:
        return len(self.items)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.labels, self.factors) if t is not None)

    def batch(self, index: Tensor | slice) -> Tensor:
        """The images at `index`, decoded here, float32 in [0, 1] on the target device."""
        rows = range(len(self))[index] if isinstance(index, slice) else index.tolist()
        images = torch.stack([self.decode(self.items[i]) for i in rows])
        return to_float(to_device(images, self.target))

    def batches(self, chunks: Sequence[Tensor]):
        """The images of each chunk, decoded by `worker_count` processes ahead of use (none:
        here, when asked for), in order."""
        workers = worker_count(self.workers, self.target)
        if workers == 0:
            yield from (self.batch(c) for c in chunks)
            return
        loader = DataLoader(
            _Decoded(self.items, self.decode),
            batch_sampler=[c.tolist() for c in chunks],
            num_workers=workers,
            collate_fn=_stack,
            pin_memory=self.target.type == "cuda",
            prefetch_factor=PREFETCH,
            generator=torch.Generator().manual_seed(0),  # not the global one the step seeded
        )
        for images in loader:
            if isinstance(images, _Unreadable):
                raise DataError(str(images))
            yield to_float(images.to(self.target, non_blocking=True))

    def _with(self, **changes) -> StreamedImages:
        fields = dict(
            name=self.name, items=self.items, decode=self.decode, shape=self.shape,
            labels=self.labels, factors=self.factors, factor_names=self.factor_names,
            workers=self.workers, binary=self.binary, target=self.target,
        )  # fmt: skip
        return StreamedImages(**(fields | changes))

    def to(self, device: torch.device | str) -> StreamedImages:
        return self._with(target=torch.device(device))

    def placed(self, device: torch.device) -> StreamedImages:
        return self.to(device)

    def subset(self, index: Tensor | slice) -> StreamedImages:
        rows = range(len(self))[index] if isinstance(index, slice) else index.tolist()
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return self._with(
            items=[self.items[i] for i in rows],
            labels=pick(self.labels),
            factors=pick(self.factors),
        )

    def limit(self, n: int | None) -> StreamedImages:
        return self if n is None or n >= len(self) else self.subset(slice(0, n))


# --- a decoded copy on disk ------------------------------------------------------------------

CACHE_FORMAT = 1  # part of the key: a change of the file layout makes new files


def _identity(obj: Any) -> Any:
    """What the cache key knows an item or a decoder by: a file by its path, size and
    modification time; a dataclass by its shown fields; anything else by its repr."""
    if isinstance(obj, Path):
        try:
            st = obj.stat()
        except OSError:
            return str(obj)
        return [str(obj.resolve()), st.st_size, st.st_mtime_ns]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        shown = [f.name for f in dataclasses.fields(obj) if f.repr]
        return [type(obj).__qualname__, {n: _identity(getattr(obj, n)) for n in shown}]
    return repr(obj)


def cache_key(data: StreamedImages) -> str:
    """sha256 of the format, the decoder, the shape and every item."""
    digest = hashlib.sha256()
    head = [CACHE_FORMAT, data.name, list(data.shape), _identity(data.decode)]
    digest.update(json.dumps(head).encode())
    for item in data.items:
        digest.update(json.dumps(_identity(item)).encode())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedRow:
    """Row i of a uint8 file of images `shape` → uint8 [C, H, W], read with os.pread (no
    mapping: the rows read stay in the page cache, not in this process's memory). Picklable:
    each process opens the file once."""

    file: str
    shape: tuple[int, int, int]

    def __call__(self, i: int) -> Tensor:
        size = math.prod(self.shape)
        fds = _OPEN.setdefault(os.getpid(), {})
        if self.file not in fds:
            try:
                fds[self.file] = os.open(self.file, os.O_RDONLY)
            except OSError as exc:
                raise DataError(f"decoded cache: cannot open {self.file} ({exc.strerror})") from None
        row = os.pread(fds[self.file], size, i * size)
        if len(row) != size:
            raise DataError(f"decoded cache: {self.file} is cut off at row {i}; delete it")
        return torch.frombuffer(bytearray(row), dtype=torch.uint8).view(self.shape)


_OPEN: dict[int, dict[str, int]] = {}  # pid → file → descriptor (a forked worker opens anew)


def with_decoded_cache(data: StreamedImages, folder: str | Path | None) -> StreamedImages:
    """`data` read from its decoded copy in `folder` (made now, once, if absent); `data`
    itself when `folder` is None. The copy is `<key>.uint8`, every image in item order."""
    if folder is None:
        return data
    folder = Path(folder).expanduser()
    file = folder / f"{cache_key(data)}.uint8"
    size = math.prod(data.shape)
    if not (file.is_file() and file.stat().st_size == len(data) * size):
        try:
            with atomic_writer(file) as out:
                bar = tqdm(data.items, desc="decoding once", unit="img", leave=False,
                           disable=len(data) < 5000)  # fmt: skip
                for item in bar:
                    image = data.decode(item)
                    if tuple(image.shape) != data.shape or image.dtype != torch.uint8:
                        raise DataError(f"{item}: decodes to {list(image.shape)} "
                                        f"{image.dtype}, not uint8 {list(data.shape)}")  # fmt: skip
                    out.write(image.contiguous().numpy().tobytes())
        except OSError as exc:
            raise DataError(
                f"data.decoded_cache: cannot write {file} ({exc.strerror}); set "
                "data.decoded_cache to a writable folder or leave it out"
            ) from None
    return data._with(items=list(range(len(data))), decode=CachedRow(str(file), data.shape))
