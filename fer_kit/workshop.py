"""Run a class on the notebooks without waiting on training: prepare the runs before, load them during.

    python -m fer_kit.workshop plan                  # the routes, and how long preparing takes here
    python -m fer_kit.workshop prepare --route 3h    # before class: runs every notebook of the route once
    python -m fer_kit.workshop lab                   # in class: JupyterLab where finished runs are loaded

`prepare` executes the route's notebooks with their defaults (copies go to workshop/, the committed ones
stay as they are), so each leaves its run folders under runs/ and its data in the cache. `lab` starts
JupyterLab with FER_KIT_WORKSHOP=1: every `train.fit` whose folder already holds a finished run of the
same configuration loads it instead of training (TrainConfig.reuse), so a notebook that took minutes
takes seconds; a student who changes a parameter trains that run, and `reuse = False` retrains anyway.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import nbformat
from tqdm import tqdm

from .paths import output_dir
from .run_notebook import execute, notebook_path

# In class minutes: reading, running and discussing, for a group that knows Python and some PyTorch.
# Notebooks in one inner list are run side by side by different groups, who then report to the room.
ROUTES = {
    "3h": [("00_quickstart", 15), ("01_dataset_statistics", 15), ("02_preprocessing_and_augmentation", 15),
           ("04_train_dan", 25),
           [("05_train_regnet_transformer", 35), ("06_train_scan_cci", 35), ("07_train_ddamfn_multitask", 35),
            ("08_learning_from_synthetic_data", 35)],
           ("09_ensembles", 20), ("10_gradcam_attention", 20), ("11_reproduce_paper_tables", 15)],
    "90min": [("00_quickstart", 15), ("01_dataset_statistics", 10), ("04_train_dan", 25),
              ("10_gradcam_attention", 20), ("11_reproduce_paper_tables", 10)],
}
BREAKS = {"3h": 20, "90min": 10}


def steps(route: str) -> list[list[tuple[str, int]]]:
    """The route as consecutive steps, each one notebook or several run side by side."""
    return [s if isinstance(s, list) else [s] for s in ROUTES[route]]


def notebooks(route: str) -> list[str]:
    return [name for step in steps(route) for name, _ in step]


def class_minutes(route: str) -> int:
    """The route's length in class: the longest notebook of each step, plus the breaks."""
    return sum(max(m for _, m in step) for step in steps(route)) + BREAKS[route]


def committed_minutes(name: str) -> float:
    """How long the notebook's committed run took (papermill's record in the notebook)."""
    meta = nbformat.read(notebook_path(name), 4).metadata.get("papermill", {})
    return float(meta.get("duration") or 0.0) / 60


def plan(route: str) -> str:
    took = {name: committed_minutes(name) for name in notebooks(route)}
    lines = [f"route {route}: {class_minutes(route)} min in class (breaks {BREAKS[route]} min)"]
    for k, step in enumerate(steps(route), 1):
        side = " | ".join(f"{name} ({m} min; its committed run {took[name]:.1f} min)" for name, m in step)
        lines.append(f"  {k}. {side}")
    total = sum(took.values())
    lines.append(f"prepare: about {total:.0f} min on the CPU of the committed runs")
    return "\n".join(lines)


def prepare(route: str, parameters: dict | None = None) -> list[str]:
    """Execute the route's notebooks once, in order (later ones load earlier runs), with a bar that
    counts the committed runs' minutes."""
    folder = output_dir() / "workshop"
    folder.mkdir(parents=True, exist_ok=True)
    took = {name: round(committed_minutes(name), 1) for name in notebooks(route)}
    done = []
    with tqdm(total=round(sum(took.values()), 1), unit="min", desc=f"preparing {route}",
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min of committed runs [{elapsed}<{remaining}]") as bar:
        for name, minutes in took.items():
            bar.set_postfix_str(name)
            execute(name, folder / f"{name}.ipynb", parameters)
            bar.update(minutes)
            done.append(name)
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fer_kit.workshop", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["plan", "prepare", "lab"])
    p.add_argument("--route", choices=sorted(ROUTES), default="3h")
    args, rest = p.parse_known_args(argv)
    if args.action == "plan":
        print(plan(args.route))
    elif args.action == "prepare":
        print(plan(args.route))
        done = prepare(args.route)
        print(f"prepared {len(done)} notebooks (executed copies in {output_dir() / 'workshop'}); "
              "start the class with: python -m fer_kit.workshop lab")
    else:
        env = {**os.environ, "FER_KIT_WORKSHOP": "1"}
        raise SystemExit(subprocess.call([sys.executable, "-m", "jupyterlab", *rest], env=env))


if __name__ == "__main__":
    main()
