"""``tidepool.torch``: a PyTorch data loader that tells the cache each epoch's order.

A map-style dataset's sampler draws the whole epoch's permutation before the first batch, so
the order is known up front; announcing it (:meth:`TidepoolFileSystem.prefetch`) lets every
file's owner in the pool fetch ahead at the speed of the link. Three lines in a training script::

    from tidepool.torch import PrefetchSampler, TidepoolDataset

    dataset = TidepoolDataset(paths, transform=decode)            # tidepool://… paths
    loader = DataLoader(dataset, batch_size=64, num_workers=4,
                        sampler=PrefetchSampler(RandomSampler(dataset), dataset))

PyTorch stays optional: nothing here imports it. :class:`PrefetchSampler` wraps any sampler (an
iterable of indices with a length, as ``DataLoader(sampler=…)`` accepts), and
:class:`TidepoolDataset` is a plain map-style dataset (``__len__``, ``__getitem__`` and the
batched ``__getitems__`` that recent PyTorch versions call, which fetches a batch's files
concurrently). Both survive ``fork`` into data-loader workers (the client does).

Limits: the announcement is sent when the sampler's iterator starts (in the main process); a
hint that cannot be delivered is logged and the epoch goes on uncached-ahead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any, Protocol

from tidepool.client import TidepoolFileSystem

log = logging.getLogger(__name__)


class _Sampler(Protocol):
    def __iter__(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


class TidepoolDataset:
    """Files of ``tidepool://`` as a map-style dataset: item ``i`` is ``transform(bytes)``."""

    def __init__(
        self,
        paths: Sequence[str],
        fs: TidepoolFileSystem | None = None,
        transform: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.fs = fs if fs is not None else TidepoolFileSystem()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def _out(self, data: bytes) -> Any:
        return self.transform(data) if self.transform is not None else data

    def __getitem__(self, index: int) -> Any:
        return self._out(self.fs.cat_file(self.paths[index]))

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A batch at once: its files are read concurrently, not one after the other."""
        wanted = [self.paths[i] for i in indices]
        datas = self.fs.cat_ranges(wanted, None, None, on_error="raise")
        return [self._out(d) for d in datas]


class PrefetchSampler:
    """Wraps a sampler and announces each epoch's order to the cache before yielding it.

    ``dataset`` gives the paths (a :class:`TidepoolDataset`, or any object with ``paths`` and
    ``fs``); ``fs`` and ``paths`` may be given instead."""

    def __init__(
        self,
        sampler: _Sampler,
        dataset: Any = None,
        *,
        paths: Sequence[str] | None = None,
        fs: TidepoolFileSystem | None = None,
    ) -> None:
        self.sampler = sampler
        self.paths = list(paths if paths is not None else dataset.paths)
        self.fs = fs if fs is not None else dataset.fs
        self.announced = 0
        """Paths the workers accepted at the last announcement."""

    def __len__(self) -> int:
        return len(self.sampler) if isinstance(self.sampler, Sized) else len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Passed on to samplers that have it (``DistributedSampler``)."""
        setter = getattr(self.sampler, "set_epoch", None)
        if setter is not None:
            setter(epoch)

    def __iter__(self) -> Iterator[int]:
        order = [int(i) for i in self.sampler]
        try:
            self.announced = self.fs.prefetch([self.paths[i] for i in order])
        except OSError as exc:  # a hint never stops an epoch
            log.info("could not announce the epoch's order to the cache: %s", exc)
            self.announced = 0
        return iter(order)


__all__ = ["PrefetchSampler", "TidepoolDataset"]
