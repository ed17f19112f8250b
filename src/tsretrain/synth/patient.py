"""Everything written for one synthetic patient, with hooks that edge cases use to break it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from tsretrain.synth import dicom_writer as dw
from tsretrain.synth.phantom import Phantom, ScanSpec

SeriesEdit = Callable[[list[Dataset]], list[Dataset]]
AfterWrite = Callable[[Path, list[Path]], None]


@dataclass
class PatientBuild:
    """A patient to write: phantom, grid, UIDs, RTSTRUCT variants and edits."""

    phantom: Phantom
    spec: ScanSpec
    ids: dw.SeriesIds
    encoding: dw.PixelEncoding
    layout: str
    seed: int
    noise_seed: int
    rtstructs: list[dw.RtstructOptions] = field(default_factory=lambda: [dw.RtstructOptions()])
    ct_edits: list[SeriesEdit] = field(default_factory=list)
    extra_series: list[Callable[[], list[Dataset]]] = field(default_factory=list)
    after_write: list[AfterWrite] = field(default_factory=list)
    reverse_file_order: bool = False
    truth_usable: bool = True

    @classmethod
    def make(
        cls,
        phantom: Phantom,
        spec: ScanSpec,
        seed: int,
        encoding: dw.PixelEncoding,
        layout: str,
        rng: np.random.Generator,
    ) -> PatientBuild:
        ids = dw.SeriesIds.for_patient(phantom.patient_id, seed, spec.slices)
        build = cls(phantom, spec, ids, encoding, layout, seed, int(rng.integers(0, 2**31)))
        build.rtstructs = [dw.RtstructOptions(seed=seed)]
        return build

    def ct_series(self) -> list[Dataset]:
        datasets = list(
            dw.ct_slices(self.phantom, self.spec, self.ids, self.encoding, np.random.default_rng(self.noise_seed))
        )
        for edit in self.ct_edits:
            datasets = edit(datasets)
        return datasets

    def all_series(self) -> Iterator[list[Dataset]]:
        yield self.ct_series()
        for options in self.rtstructs:
            yield [dw.rtstruct(self.phantom, self.spec, self.ids, options)]
        for make in self.extra_series:
            yield make()
