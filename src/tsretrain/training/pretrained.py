"""Fine-tuning from a pretrained nnU-Net model, as nnU-Net documents it (``documentation/pretraining_and_finetuning``).

A pretrained model is an nnU-Net results folder ``<trainer>__<plans>__<configuration>`` (plans.json, dataset.json,
``fold_K/checkpoint_final.pth``): a TotalSegmentator task folder, a tsretrain run's model under ``nnUNet_results``
(or one fold of it: its ``fold_K`` folder), or an exported model package (zip, its folder, or a store URI of the
zip). Two things come from it:

- **plans** (``preprocess --plans-from``): nnU-Net's ``move_plans_between_datasets`` semantics: every
  configuration's topology, patch and spacing and the CT normalisation (the pretrained dataset's foreground
  intensities) are kept, the dataset name, plans name, data identifiers and image reader become the target's,
  and the target's own fingerprint gives the rest (median spacing and shape);
- **weights** (``train --init-from``): every layer but the segmentation head (``.seg_layers.``), so another label
  set is fine but other plans are not; a mismatch is refused before training with the first layer that differs.
  The second stage (``tsretrain.training.second_stage``) takes the head too: its labels are the first stage's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError

HEAD = ".seg_layers."  # what nnU-Net's load_pretrained_weights never transfers


@dataclass(frozen=True)
class Pretrained:
    """A trained nnU-Net model: its folder, plans and the checkpoint the weights come from, and where it was found
    (``origin``: the model package as given, a store URI or a path; the folder itself otherwise)."""

    folder: Path
    checkpoint: Path
    origin: str = ""

    @property
    def source(self) -> str:
        """What the model's records name it by: the package it came from (the folder of a package is scratch,
        e.g. a pod's local disk), or its folder."""
        return self.origin or str(self.folder)

    @property
    def plans(self) -> dict[str, Any]:
        plans: dict[str, Any] = json.loads((self.folder / "plans.json").read_text())
        return plans

    @property
    def configuration(self) -> str:
        return self.folder.name.rsplit("__", 1)[-1]


def _model_folder(path: Path) -> Path | None:
    """The trainer__plans__configuration folder at or directly below ``path``."""
    if (path / "plans.json").is_file():
        return path
    found = sorted(p.parent for p in path.glob("*__*__*/plans.json"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"pretrained model {path} holds several models ({names})", "name one of their folders")
    return found[0] if found else None


def open_pretrained(source: str, scratch: Path) -> Pretrained:
    """The pretrained model at ``source`` (a model folder, a dataset folder holding one, or a model package)."""
    from tsretrain.delivery.package import Package

    path = Path(source)
    if "://" not in source and (path / "checkpoint_final.pth").is_file() and (path.parent / "plans.json").is_file():
        return Pretrained(path.parent, path / "checkpoint_final.pth")  # one fold of a model
    folder = None if "://" in source or not path.is_dir() else _model_folder(path)
    origin = ""
    if folder is None:
        if "://" not in source and not path.exists():
            raise UserError(f"pretrained model {source} does not exist", "give a model folder or a model package")
        folder = Package.open(source, scratch).model_folder
        origin = source if "://" in source else str(path.resolve())
    checkpoints = sorted(folder.glob("fold_*/checkpoint_final.pth"))
    if not checkpoints:
        raise UserError(f"pretrained model {folder} has no fold_*/checkpoint_final.pth", "train it to the end first")
    return Pretrained(folder, checkpoints[0], origin)


def transferred_plans(pretrained: Pretrained, target: dict[str, Any], plans_name: str) -> dict[str, Any]:
    """The pretrained plans for the target dataset (``target``: the plans nnU-Net's planner made for it)."""
    plans: dict[str, Any] = json.loads(json.dumps(pretrained.plans))
    source_name = plans["plans_name"]
    for configuration in plans["configurations"].values():
        identifier = configuration.get("data_identifier")
        if identifier:
            rest = identifier[len(source_name) :] if identifier.startswith(source_name) else f"_{identifier}"
            configuration["data_identifier"] = plans_name + rest
    plans.update(
        dataset_name=target["dataset_name"],
        plans_name=plans_name,
        image_reader_writer=target["image_reader_writer"],
        original_median_spacing_after_transp=target["original_median_spacing_after_transp"],
        original_median_shape_after_transp=target["original_median_shape_after_transp"],
    )
    plans["tsretrain_transferred_from"] = pretrained.source
    return plans


def first_mismatch(network: dict[str, Any], pretrained: dict[str, Any], head: bool = False) -> str | None:
    """The first layer (the head aside unless ``head``) missing from the pretrained weights or shaped otherwise,
    described."""
    for key, value in network.items():
        if HEAD in key and not head:
            continue
        if key not in pretrained:
            return f"{key} is missing from the pretrained weights"
        if tuple(pretrained[key].shape) != tuple(value.shape):
            return f"{key} is {tuple(pretrained[key].shape)} there, {tuple(value.shape)} here"
    return None


def network_weights(pretrained: Pretrained, staged: Path) -> tuple[dict[str, Any], Path]:
    """The pretrained network's weights on the CPU, and a checkpoint holding only them for nnU-Net's loader (which
    loads without ``map_location``: a checkpoint saved from a GPU would not load on a CPU-only node)."""
    import torch

    weights: dict[str, Any] = torch.load(pretrained.checkpoint, map_location="cpu", weights_only=False)[
        "network_weights"
    ]
    staged.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": weights}, staged)
    return weights, staged


def check_compatible(network: Any, pretrained: Pretrained, weights: dict[str, Any], head: bool = False) -> None:
    """Refuse weights this network cannot take (nnU-Net would stop with an assertion); with ``head`` the
    segmentation head too (the same labels)."""
    mismatch = first_mismatch(network.state_dict(), weights, head)
    if mismatch is not None:
        raise UserError(
            f"--init-from {pretrained.source}: the networks differ: {mismatch}",
            f"preprocess with --plans-from {pretrained.source} (its plans and configuration "
            f"{pretrained.configuration}), then train that configuration",
        )


def load_head(network: Any, weights: dict[str, Any]) -> None:
    """Load the pretrained segmentation head into ``network`` (nnU-Net's loader leaves it out), unwrapping a
    compiled or distributed network as nnU-Net's loader does."""
    module = network.module if hasattr(network, "module") else network
    module = module._orig_mod if hasattr(module, "_orig_mod") else module
    state = module.state_dict()
    state.update({key: value for key, value in weights.items() if HEAD in key and key in state})
    module.load_state_dict(state)
