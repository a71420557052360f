"""Eval preprocessing, recorded once: how an image becomes a model's input at evaluation time.

`EvalPreprocessing` holds the eval transform's geometry (image side, centre-crop fraction, resize filter) and the
normaliser's channel statistics. Training resolves it from the options and the model registry's defaults and saves
it in checkpoints (``image_size`` and ``eval``); inference reads it back from a checkpoint (flags override) or takes
the registry's defaults; export builds its input size and the in-graph normaliser from it. Every reader goes through
this one record, so the three cannot disagree; the registry's defaults (`ModelSpec.eval`) are one too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ipu_cnn.models.registry import ModelSpec


@dataclass(frozen=True)
class EvalPreprocessing:
    """Eval transform parameters and normaliser statistics (0..1 scale) of one model."""

    image_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def resolve(cls, spec: ModelSpec, *, image_size: int | None = None, crop_pct: float | None = None,
                interpolation: str | None = None, saved: Mapping[str, Any] | None = None,
                plain: bool = False) -> EvalPreprocessing:
        """The preprocessing of `spec`'s model: each value from the argument when given, else from `saved` (a
        checkpoint's ``eval`` record, with ``size``), else the registry's default. `plain` is
        ``--normalization-location none``: pixels scaled to [0, 1] without a mean/std step (identity statistics)."""
        saved = saved or {}
        mean = (0.0, 0.0, 0.0) if plain else tuple(saved.get("mean") or spec.mean)
        std = (1.0, 1.0, 1.0) if plain else tuple(saved.get("std") or spec.std)
        return cls(image_size=int(image_size or saved.get("size") or spec.image_size),
                   crop_pct=float(crop_pct or saved.get("crop_pct") or spec.crop_pct),
                   interpolation=str(interpolation or saved.get("interpolation") or spec.interpolation),
                   mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
                   std=tuple(float(v) for v in std))  # type: ignore[arg-type]

    def eval_transform(self) -> Any:
        """The data layer's `EvalTransform` with these parameters."""
        from ipu_cnn.data import EvalTransform

        return EvalTransform(size=self.image_size, crop_pct=self.crop_pct, interpolation=self.interpolation)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for reports (``image_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``)."""
        return {"image_size": self.image_size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    def checkpoint_record(self, normalization_location: str) -> dict[str, Any]:
        """The checkpoint's ``eval`` entry (``size`` rather than ``image_size``, as checkpoints have always had)."""
        return {"size": self.image_size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "normalization_location": normalization_location}
