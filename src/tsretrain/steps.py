"""The step interface shared by the CLI, the local runner and the Argo pods.

A step is a plain function ``run(config) -> StepResult`` with a frozen dataclass as its configuration.
The CLI builds the configuration from its options; a workflow pod runs the same CLI subcommand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class StepResult:
    """What a step produced: where its outputs are and how many things it handled."""

    step: str
    outputs: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        lines = [f"{self.step}: {counts}"] + [f"  {k}: {v}" for k, v in self.outputs.items()]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)
