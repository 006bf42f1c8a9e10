"""`stable-audio-train-lora`: the same as `stable-audio-train lora` (kept for existing scripts).

Multi-GPU: `torchrun --nproc_per_node N -m stable_audio_3.apps.train_cli ...` (same arguments).
"""

from __future__ import annotations

from stable_audio_3.apps import train

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    return train.main(["lora", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
