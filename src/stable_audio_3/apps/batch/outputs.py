"""Where batch items go and how a rerun knows what is finished: `<output-dir>/<name>.<format>` and
its sidecar `<name>.<format>.json` (the generation record plus the batch line it came from), both
renamed into place together. An item whose file and sidecar exist and whose recorded line equals the
current one is finished and skipped; a different line under the same name is refused unless
`--overwrite`. Output dirs may be local or, through fsspec, any filesystem URI (`s3://...`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stable_audio_3.apps.batch.jobs import Item, JobFileError
from stable_audio_3.apps.outputs import encode_audio

__all__ = ["Destination", "item_record"]


@dataclass(frozen=True)
class Destination:
    """An output folder, local or remote (fsspec URI), and the format of every item."""

    root: str
    format: str

    def _fs(self):
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.root)
        return fs, path.rstrip("/")

    def path(self, item: Item) -> str:
        return f"{self.root.rstrip('/')}/{item.name}.{self.format}"

    def finished(self, item: Item, overwrite: bool) -> bool:
        """True when a previous run wrote this item from the same line."""
        fs, root = self._fs()
        audio, sidecar = f"{root}/{item.name}.{self.format}", f"{root}/{item.name}.{self.format}.json"
        if not (fs.exists(audio) and fs.exists(sidecar)):
            return False
        try:
            recorded = json.loads(fs.cat_file(sidecar))["batch"]
        except (ValueError, KeyError, TypeError):
            recorded = None
        same = (
            recorded is not None
            and recorded.get("request") == item.request
            and recorded.get("index") == item.index
        )
        if not same and not overwrite:
            raise JobFileError(
                f"{audio} exists from another request (line {item.line} changed?); "
                "pass --overwrite to replace it"
            )
        return same

    def write(self, item: Item, audio: Any, sample_rate: int, record: dict[str, Any]) -> str:
        """Audio (channels, samples) and its sidecar, each staged and then moved into place, the
        sidecar last (it is what marks the item finished)."""
        fs, root = self._fs()
        fs.makedirs(root, exist_ok=True)
        final = f"{root}/{item.name}.{self.format}"
        for target, data in (
            (final, encode_audio(audio, sample_rate, self.format)),
            (f"{final}.json", json.dumps(record, indent=1).encode()),
        ):
            staged = f"{root}/.{target.rsplit('/', 1)[-1]}.pending"
            fs.pipe_file(staged, data)
            fs.mv(staged, target)
        return self.path(item)

    def write_summary(self, summary: dict[str, Any]) -> str:
        fs, root = self._fs()
        fs.makedirs(root, exist_ok=True)
        staged = f"{root}/.summary.json.pending"
        fs.pipe_file(staged, json.dumps(summary, indent=1).encode())
        fs.mv(staged, f"{root}/summary.json")
        return f"{self.root.rstrip('/')}/summary.json"


def item_record(base: dict[str, Any], item: Item, jobs_file: str) -> dict[str, Any]:
    """The CLI's sidecar for one item plus where it came from in the batch file."""
    return {
        **base,
        "arguments": item.arguments,
        "batch": {"jobs": jobs_file, "line": item.line, "index": item.index, "request": item.request},
    }
