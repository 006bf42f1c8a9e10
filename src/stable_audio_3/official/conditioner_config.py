"""`model.conditioning.configs` entries: the T5Gemma prompt and `seconds_total` number conditioners."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PromptConditionerConfig", "NumberConditionerConfig", "TEXT_PADDING_MODES"]

T5GEMMA_WIDTHS = {"google/t5gemma-b-b-ul2": 768}
TEXT_PADDING_MODES = ("none", "zero", "learned")


@dataclass(frozen=True)
class PromptConditionerConfig:
    """`{type: "t5gemma"}` conditioner config (defaults are the reference's)."""

    id: str
    output_dim: int
    model_name: str = "google/t5gemma-b-b-ul2"
    max_length: int = 128
    padding_mode: str = "zero"
    project_out: bool = False
    repo_id: str | None = None
    subfolder: str | None = None
    model_path: str | None = None
    enable_grad: bool = False

    def __post_init__(self) -> None:
        if self.model_name not in T5GEMMA_WIDTHS:
            raise ValueError(f"prompt conditioner model_name must be one of {sorted(T5GEMMA_WIDTHS)}")
        if self.padding_mode not in TEXT_PADDING_MODES:
            raise ValueError(f"prompt conditioner padding_mode must be one of {TEXT_PADDING_MODES}")
        if int(self.max_length) < 1:
            raise ValueError("prompt conditioner max_length must be >= 1")

    @property
    def width(self) -> int:
        return T5GEMMA_WIDTHS[self.model_name]


@dataclass(frozen=True)
class NumberConditionerConfig:
    """`{type: "number"}` conditioner config: clamp to [min_val, max_val], normalise, embed."""

    id: str
    output_dim: int
    min_val: float = 0.0
    max_val: float = 1.0
    fourier_features_type: str = "learned"

    def __post_init__(self) -> None:
        if self.fourier_features_type != "expo":
            raise ValueError(
                f"number conditioner {self.id!r}: fourier_features_type "
                f"{self.fourier_features_type!r} is not supported (the released models use 'expo')"
            )
        if not self.max_val > self.min_val:
            raise ValueError(f"number conditioner {self.id!r}: max_val must be greater than min_val")
