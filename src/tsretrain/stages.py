"""The stage interface shared by the CLI, the local runner and the workflow pods.

A stage is a plain function ``run(config) -> StageResult`` with a frozen, keyword-only dataclass as its
configuration; ``tsretrain.pipeline.registry`` declares each one once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class StageResult:
    """What a stage produced: where its outputs are and how many things it handled."""

    stage: str
    outputs: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        lines = [f"{self.stage}: {counts}"] + [f"  {k}: {v}" for k, v in self.outputs.items()]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)
