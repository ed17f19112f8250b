"""Assembly of the nnU-Net raw dataset, with label maps from conversion or from the pseudo-label merge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.dataset.assemble import AssembleConfig, assemble
from tsretrain.dataset.split import SplitConfig, run_split
from tsretrain.synth.cohort import SynthConfig, generate


def test_labels_from_the_pseudolabel_merge(tmp_path: Path) -> None:
    generate(
        SynthConfig(
            out=tmp_path / "cohort", cases=6, rows=48, columns=48, slices=12, pixel_spacing=4.0, edge_cases=False
        )
    )
    convert(ConvertConfig(input=tmp_path / "cohort" / "dicom", out=tmp_path / "converted", workers=1))
    run_split(SplitConfig(converted=tmp_path / "converted", out=tmp_path / "split", cv_folds=2))
    merged = tmp_path / "pseudolabels"
    for case_dir in (tmp_path / "converted" / "cases").iterdir():
        if not (case_dir / f"{case_dir.name}.nii.gz").is_file():
            continue
        image = sitk.ReadImage(str(case_dir / f"{case_dir.name}.nii.gz"))
        array = sitk.GetArrayFromImage(image)
        array[0, 0, 0] = 5  # a mark only the merged maps carry
        marked = sitk.GetImageFromArray(array)
        marked.CopyInformation(image)
        (merged / case_dir.name).mkdir(parents=True)
        sitk.WriteImage(marked, str(merged / case_dir.name / f"{case_dir.name}.nii.gz"))
    result = assemble(
        AssembleConfig(
            converted=tmp_path / "converted", split=tmp_path / "split", out=tmp_path / "raw", labels_from=merged
        )
    )
    folder = Path(result.outputs["dataset"])
    labels = sorted((folder / "labelsTr").glob("*.nii.gz")) + sorted((folder / "labelsTs").glob("*.nii.gz"))
    assert labels and all(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[0, 0, 0] == 5 for p in labels)
    split = json.loads((tmp_path / "split" / "split.json").read_text())
    assert {p.name.removesuffix(".nii.gz") for p in (folder / "labelsTs").iterdir()} == set(split["test"])
    images = sorted((folder / "imagesTr").glob("*.nii.gz"))
    source = tmp_path / "converted" / "cases" / images[0].name.removesuffix("_0000.nii.gz") / images[0].name
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(images[0]))), sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    )
    shutil.rmtree(folder)
