"""How nnU-Net finds tsretrain's trainers, at training and at prediction time.

nnU-Net looks a trainer up by name by importing every module of ``nnunetv2.training.nnUNetTrainer``; some of
them import timm/torchvision, which may be absent or broken beside a given torch (it is, beside the CPU
torch of the local install). tsretrain therefore resolves names itself: its own trainers and nnU-Net's base
trainers by direct import, TotalSegmentator's own trainers when it is loaded, then nnU-Net's trainer modules
(skipping those that cannot be imported here), then the ``nnUNet_extTrainer`` folders through nnU-Net's own
lookup. ``install()`` puts this resolver into the two places nnU-Net calls (training entry and predictor), so a
checkpoint that names a tsretrain trainer, a TotalSegmentator trainer or an nnU-Net variant loads anywhere
tsretrain is installed. For
plain ``nnUNetv2_train`` set ``nnUNet_extTrainer`` to :func:`ext_trainer_path` (``tsretrain nnunet-env`` prints
it).
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any

from tsretrain.errors import UserError


def find_trainer(name: str) -> Any:
    """The trainer class of that name."""
    from tsretrain.training.nnunet_trainers.tsretrain_trainers import TRAINERS

    if name in TRAINERS:
        return TRAINERS[name]
    totalsegmentator = sys.modules.get("totalsegmentator.nnunet")  # loaded: its own trainers, as its lookup has them
    if name in getattr(totalsegmentator, "custom_trainers", {}):
        return totalsegmentator.custom_trainers[name]  # type: ignore[union-attr]
    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        return nnUNetTrainer
    if name == "nnUNetTrainerNoMirroring":
        from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
            nnUNetTrainerNoMirroring,
        )

        return nnUNetTrainerNoMirroring
    found = _walk_nnunet_trainers(name)
    if found is not None:
        return found
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:  # nnUNet_extTrainer folders
        found = recursive_find_trainer_class_by_name(name)
    except Exception as exc:  # nnU-Net imports every trainer module; some need what this install lacks
        raise UserError(f"unknown trainer {name!r}", _known(name, f" (nnU-Net's own lookup failed: {exc})")) from exc
    if found is None:
        raise UserError(f"unknown trainer {name!r}", _known(name))
    return found


def _walk_nnunet_trainers(name: str) -> Any:
    """nnU-Net's own trainer modules searched for the name, skipping those that cannot be imported here."""
    import importlib
    import pkgutil

    import nnunetv2.training.nnUNetTrainer as root

    for info in pkgutil.walk_packages(root.__path__, f"{root.__name__}.", onerror=lambda _: None):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # e.g. a variant that needs timm beside a torchvision this torch cannot load
            continue
        if isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    return None


def _known(name: str, note: str = "") -> str:
    """The trainers a name may have meant."""
    from tsretrain.training.nnunet_trainers.tsretrain_trainers import TRAINERS

    names = [*TRAINERS, "nnUNetTrainer", "nnUNetTrainerNoMirroring"]
    close = difflib.get_close_matches(name, names, n=1)
    return (f"did you mean {close[0]}? " if close else "") + f"known: {', '.join(names)} and nnU-Net's variants{note}"


def install() -> None:
    """Make nnU-Net's training entry and predictor use :func:`find_trainer` (also over TotalSegmentator's lookup,
    which it puts into the predictor when imported: its trainers are among those :func:`find_trainer` knows)."""
    import nnunetv2.inference.predict_from_raw_data as predict_module
    import nnunetv2.run.run_training as training_module

    predict_module.recursive_find_trainer_class_by_name = find_trainer
    training_module.recursive_find_trainer_class_by_name = find_trainer


def ext_trainer_path() -> str:
    """The folder to put in ``nnUNet_extTrainer`` so plain ``nnUNetv2_train -tr nnUNetTrainerTsr`` works."""
    from tsretrain.training import nnunet_trainers

    return os.path.dirname(nnunet_trainers.__file__)
