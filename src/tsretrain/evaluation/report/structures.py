"""What the report says about a structure's size: the run's large structures and those at the resolution limit."""

from __future__ import annotations

from tsretrain.labels.dictionary import TUMOUR_LABEL

LARGE_ML = 3.0  # a structure this big (mean reference volume) is one of the run's large structures
RESOLUTION_VOXELS = 100  # below this a structure is about 6 voxels across or less
RESOLUTION_NOTE = "at the resolution limit: a one-voxel error in its outline alone costs about 0.4 Dice"


def structure_sizes(per_case: list[dict[str, str]]) -> dict[str, tuple[float, float]]:
    """Mean reference volume (mL, voxels) of every label, over the test cases whose reference has it."""
    sizes: dict[str, list[tuple[float, float]]] = {}
    for row in per_case:
        if row["status"] in ("both", "missed"):
            sizes.setdefault(row["name"], []).append((float(row["ref_volume_ml"]), float(row["ref_voxels"])))
    return {name: (sum(m for m, _ in v) / len(v), sum(n for _, n in v) / len(v)) for name, v in sizes.items()}


def large_structures(per_case: list[dict[str, str]], limit: int = 10) -> list[tuple[str, float]]:
    """(name, mean Dice) of the largest structures other than GTVp of at least ``LARGE_ML``, by Dice."""
    sizes = structure_sizes(per_case)
    dice: dict[str, list[float]] = {}
    for row in per_case:
        if row["status"] in ("both", "missed"):
            dice.setdefault(row["name"], []).append(float(row["dice"]))
    large = sorted(
        (n for n, (ml, _) in sizes.items() if ml >= LARGE_ML and n != TUMOUR_LABEL), key=lambda n: -sizes[n][0]
    )
    return sorted(((n, sum(dice[n]) / len(dice[n])) for n in large[:limit]), key=lambda item: -item[1])
