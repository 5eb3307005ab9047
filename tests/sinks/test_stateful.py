"""The Zarr sink under hypothesis' stateful testing: write, interrupt, corrupt, resume and read in random orders.

A model follows what the store should hold: whose pixels (scene ``A``, or ``B``: the same grid and
attrs, other pixels), whether the run finished, whether a chunk was damaged since. Whatever the order,
``open_patches(verify="full")`` returns exactly the patches of the scene the store was written
from, or refuses (incomplete, or damaged); a write never mixes the pixels of two scenes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import patchkit
from patchkit.errors import ChangedSourceError, DamagedOutputError, IncompleteStoreError
from patchkit.sinks import zarr as sink

pytest.importorskip("zarr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SPEC = dict(sizes=(6, 5), strides=(4, 3), padding="SAME")
WRITE = dict(**SPEC, max_memory="6KiB", chunk_patches=3, compression=None, progress=False)


def _scenes() -> dict:
    """Scene ``A`` and scene ``B``: the same grid, dims, coords and attrs, other pixels."""
    rng = np.random.default_rng(5)
    a = xr.DataArray(rng.integers(0, 60000, (2, 37, 31), dtype=np.uint16), dims=("band", "y", "x"),
                     coords={"y": np.arange(37) * -10.0, "x": np.arange(31) * 10.0}, attrs={"units": "DN"})
    return {"A": a, "B": a.copy(data=a.values + 1)}


SCENES = _scenes()
EXPECTED = {name: scene.patches.extract(**SPEC) for name, scene in SCENES.items()}


class Killed(BaseException):
    """What an interrupted run dies of (not an Exception: nothing catches it on the way)."""


class ZarrSinkMachine(RuleBasedStateMachine):
    """Random sequences of writes, interruptions, corruption and reads of one store."""

    @initialize()
    def start(self):
        self.folder = Path(tempfile.mkdtemp(prefix="patchkit-stateful-"))
        self.path = self.folder / "p.zarr"
        self.owner = None  # whose pixels the logged bands hold (None: no band logged yet)
        self.exists = self.complete = self.damaged = False

    def teardown(self):
        shutil.rmtree(self.folder, ignore_errors=True)

    def _logged(self) -> int:
        return len(sink._open_group(self.path).attrs.get(sink.BANDS, [])) if self.exists else 0

    def _wrote(self, name: str) -> None:
        self.exists = self.complete = True
        self.owner = name

    @rule(name=st.sampled_from("AB"), overwrite=st.booleans())
    def write(self, name, overwrite):
        """A whole run: finishes the store, refuses other pixels, or starts afresh with mode='w'."""
        scene = SCENES[name]
        if overwrite:
            scene.patches.to_zarr(self.path, **WRITE, mode="w")
            self._wrote(name)
            self.damaged = False
        elif self.exists and self.owner not in (None, name):
            with pytest.raises(ChangedSourceError):
                scene.patches.to_zarr(self.path, **WRITE)
        else:
            scene.patches.to_zarr(self.path, **WRITE)
            self._wrote(name)

    @rule(name=st.sampled_from("AB"), after=st.integers(0, 3))
    def interrupt(self, name, after):
        """A run on a fresh store that dies after ``after`` chunk writes."""
        original, calls = sink._write_chunk, [0]

        def dying(*args):
            calls[0] += 1
            if calls[0] > after:
                raise Killed
            return original(*args)

        sink._write_chunk = dying
        try:
            with pytest.raises(Killed):
                SCENES[name].patches.to_zarr(self.path, **WRITE, mode="w")
        finally:
            sink._write_chunk = original
        self.exists, self.complete, self.damaged = True, False, False
        self.owner = name if self._logged() else None

    @precondition(lambda self: self.exists)
    @rule(kind=st.sampled_from(["delete", "truncate", "flip"]), pick=st.integers(0, 10**6))
    def corrupt(self, kind, pick):
        """Damage one stored chunk of the patches."""
        chunks = sorted(p for p in (self.path / "pixels" / "c").rglob("*") if p.is_file()) if (self.path / "pixels" / "c").exists() else []
        if not chunks:
            return
        victim = chunks[pick % len(chunks)]
        row = int(victim.relative_to(self.path / "pixels" / "c").parts[0])  # chunks hold one patch row
        logged = sink._open_group(self.path).attrs.get(sink.ROWS_DONE, [])
        data = victim.read_bytes()
        if kind == "delete":
            victim.unlink()
        elif kind == "truncate":
            victim.write_bytes(data[: len(data) // 2])
        else:
            flipped = bytearray(data)
            # in the chunk's first third: an edge chunk along patch_col holds 2 of its 3 patches, the rest is
            # zarr's padding beyond the array, where a flipped byte changes no pixel
            flipped[pick % max(1, len(flipped) // 3)] ^= 0x5A
            victim.write_bytes(bytes(flipped))
        # a finished row stays damaged until mode='w'; an unfinished one is written again by the next run
        self.damaged |= any(a <= row < b for a, b in logged)

    @rule()
    def read(self):
        """A reader gets exactly the scene's patches, or a refusal: never pixels that were not written."""
        if not (self.exists and self.complete):
            with pytest.raises(IncompleteStoreError):
                patchkit.open_patches(self.path, verify="full")
        elif self.damaged:
            with pytest.raises(DamagedOutputError):
                patchkit.open_patches(self.path, verify="full")
        else:
            stored = patchkit.open_patches(self.path, verify="full")["pixels"].load()
            xr.testing.assert_identical(stored.rename(None), EXPECTED[self.owner])

    @invariant()
    def never_half_marked(self):
        """A store either has no completion marker or all its bands logged."""
        if self.exists:
            group = sink._open_group(self.path)
            if group is not None and group.attrs.get(sink.COMPLETE):
                rows = sum(b - a for a, b in group.attrs.get(sink.ROWS_DONE, []))
                assert rows == EXPECTED["A"].sizes["patch_row"]


ZarrSinkMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=10, deadline=None)
test_zarr_sink_state_machine = pytest.mark.slow(ZarrSinkMachine.TestCase)
