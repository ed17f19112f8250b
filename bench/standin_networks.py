"""The STAND-IN builder's two networks on the model that must tell left from right: TotalSegmentator's 0.75 mm
``head_glands_cavities`` group (eyes, lenses, optic nerves, parotids), trained as ``tsretrain standin-weights``
trains it, with the 3-stage network of the one-sided models (``ORGANS``, the baseline) and the 4-stage one it
gets (``SIDES``).

Each variant runs in its own process pinned to one CPU (both at once on a 2-CPU machine): the builder's phantoms,
its preparation through TotalSegmentator's input path and nnU-Net's preprocessor, ``standins.train`` for
``--iterations`` steps, ``standins.fit`` (Dice per class through nnU-Net's sliding window on the training phantoms).

``python bench/standin_networks.py --iterations 1000 --out docs/benchmarks.md``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import benchlib
import numpy as np

from tsretrain.labels.dictionary import load_dictionary
from tsretrain.totalseg import standins
from tsretrain.totalseg.models import models_for

VARIANTS = ("ORGANS", "SIDES")
SPACING = (0.75, 0.75, 1.0)


def child(variant: str, iterations: int) -> None:
    """Train the 0.75 mm group with one network; print its fit as JSON."""
    network = getattr(standins, variant)
    config = standins.StandinConfig(out=Path("unused"), iterations=iterations)
    dictionary = load_dictionary(config.dictionary)
    samples = standins.make_samples(config, dictionary)
    truth = {name for sample in samples for name in sample.classes}
    every = standins.groups(models_for(dictionary.pseudolabel_tasks()), truth)
    group = replace(next(g for g in every if g.spacing_xyz == SPACING), network=network)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = standins.prepare(group, samples, Path(scratch))
    started = time.process_time()
    trained, losses = standins.train(group, prepared, iterations, config.seed)
    seconds = time.process_time() - started
    fit = standins.fit(trained, prepared, group)
    skipped = int(np.isnan(losses).sum())  # as the builder counts them
    print(json.dumps({"train_cpu_s": seconds, "skipped": skipped, "fit": fit}))


def run(variant: str, iterations: int, cpu: int) -> subprocess.Popen[str]:
    command = ["taskset", "-c", str(cpu), sys.executable, __file__, "--child", variant]
    command += ["--iterations", str(iterations)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.iterations)
        return
    machine = benchlib.machine_line()
    processes = {
        variant: run(variant, args.iterations, cpu % (os.cpu_count() or 1)) for cpu, variant in enumerate(VARIANTS)
    }
    found = {}
    for variant, process in processes.items():
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"{variant}: exit {process.returncode}")
        found[variant] = json.loads(out.strip().splitlines()[-1])
    classes = list(found["ORGANS"]["fit"])
    rows = [
        "| network | patch | features | Adam | train CPU s (vs ORGANS) | skipped steps | "
        + " | ".join(c.replace("_", " ") for c in classes)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(classes),
    ]
    for variant in VARIANTS:
        network, result = getattr(standins, variant), found[variant]
        ratio = result["train_cpu_s"] / found["ORGANS"]["train_cpu_s"]
        rows.append(
            f"| `{variant}` | {' x '.join(map(str, network.patch))} | {'-'.join(map(str, network.features))} "
            f"| {network.learning_rate:g} | {result['train_cpu_s']:.0f} ({ratio:.2f}) | {result['skipped']} | "
            + " | ".join(f"{result['fit'][c]:.2f}" for c in classes)
            + " |"
        )
    section = [
        "## The stand-ins' networks on left/right pairs (`bench/standin_networks.py`)",
        "",
        f"{machine}. TotalSegmentator's 0.75 mm `head_glands_cavities` group of the STAND-IN builder (two phantoms, "
        f"{args.iterations} steps of two patches, bfloat16 autocast), each network in its own process on one CPU, "
        "both at once; fit: Dice per class on the training phantoms through nnU-Net's sliding window "
        "(`standins.fit`). `ORGANS` is the network of the models without left/right pairs (the baseline), "
        "`SIDES` the one a model with pairs gets.",
        "",
        *rows,
        "",
        "The phantom is left/right symmetric: the sides differ only in context 20-30 mm away (where the optic nerve "
        "runs, which way the skin curves), beyond the 3-stage network's receptive field (~35 voxels, 26 mm) and "
        "within the 4-stage one's (~75, 56 mm). Single runs, one seed: treat differences of a few hundredths as "
        "noise.",
        "",
        f"Command: `python bench/standin_networks.py --iterations {args.iterations} --out docs/benchmarks.md`",
    ]
    benchlib.update_section(args.out, "bench/standin_networks.py", "\n".join(section))


if __name__ == "__main__":
    main()
