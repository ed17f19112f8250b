"""nnU-Net's post-processing steps, read from its ``postprocessing.json`` and applied to a folder of label maps: what
the postprocess stage decides, export packages and infer applies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.resources import cpu_quota
from tsretrain.sizing import POSTPROCESS_NS
from tsretrain.storage.atomic import staged_dir
from tsretrain.training.nnunet_env import image_size, nnunet_pools, worth_spawning

Steps = tuple[list[Callable[..., Any]], list[dict[str, Any]]]  # nnU-Net's pp_fns and pp_fn_kwargs


KNOWN_STEPS = ("remove_all_but_largest_component_from_segmentation",)  # what determine_postprocessing chooses


def steps_of(document: dict[str, Any], source: str) -> Steps:
    """nnU-Net's post-processing steps as its ``postprocessing.json`` names them, as its functions and their
    arguments: only nnU-Net's own steps (a package's ``postprocessing.pkl`` is never unpickled)."""
    from nnunetv2.postprocessing import remove_connected_components as nnunet

    names, kwargs = document.get("postprocessing_fns"), document.get("postprocessing_kwargs")
    if not isinstance(names, list) or not isinstance(kwargs, list) or len(names) != len(kwargs):
        raise UserError(f"{source}: not nnU-Net's postprocessing.json (postprocessing_fns and _kwargs)")
    unknown = sorted(set(names) - set(KNOWN_STEPS))
    if unknown:
        raise UserError(
            f"{source}: unknown post-processing step(s) {', '.join(map(str, unknown))}",
            f"only nnU-Net's {', '.join(KNOWN_STEPS)} is applied: re-export the model with tsretrain",
        )
    return [getattr(nnunet, name) for name in names], [dict(k) for k in kwargs]


def apply_to_folder(source: Path, target: Path, steps: Steps, model: Path, workers: int) -> None:
    """nnU-Net's ``apply_postprocessing_to_folder`` on the label maps in ``source`` into ``target`` (complete or
    absent), with the model folder's plans and dataset JSON; no steps write the maps unchanged."""
    from nnunetv2.postprocessing import remove_connected_components as nnunet

    ending = json.loads((model / "dataset.json").read_text())["file_ending"]
    maps = sorted(source.glob(f"*{ending}"))  # nnU-Net's own JSON files lie beside the predictions
    voxels = sum(math.prod(image_size(path)) for path in maps)  # a component removal and a write per map
    applying = worth_spawning(max(1, min(workers or cpu_quota(), len(maps))), POSTPROCESS_NS * voxels / 1e9)
    with nnunet_pools(applying, nnunet), staged_dir(target) as staging:
        nnunet.apply_postprocessing_to_folder(
            str(source), str(staging), *steps, str(model / "plans.json"), str(model / "dataset.json"), applying
        )
