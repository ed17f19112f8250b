"""The GTVp volume bands: the split stratifies by them, the evaluation reports the tumour by them."""

from __future__ import annotations

GTVP_BANDS_ML = (3.0, 10.0, 30.0)
"""Upper bounds of the GTVp volume bands (mL): < 3, 3-10, 10-30, >= 30 (small tumours score far lower)."""


VOLUME_BANDS = (
    *(f"GTVp {low:g}-{high:g} mL" for low, high in zip((0.0, *GTVP_BANDS_ML), GTVP_BANDS_ML, strict=False)),
    f"GTVp >= {GTVP_BANDS_ML[-1]:g} mL",
)
"""The band names, in numeric order."""


def volume_band(volume_ml: float) -> str:
    """Name of the GTVp volume band of a volume in mL."""
    return VOLUME_BANDS[sum(volume_ml >= edge for edge in GTVP_BANDS_ML)]
