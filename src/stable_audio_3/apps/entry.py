"""The `stable-audio` command: `stable-audio batch ...` runs a batch file, anything else is one
generation (`apps.cli`)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["batch"]:
        from stable_audio_3.apps.batch.main import main as batch_main

        return batch_main(argv[1:])
    from stable_audio_3.apps.cli import main as cli_main

    return cli_main(argv)
