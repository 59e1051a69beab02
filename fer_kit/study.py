"""Rerun a notebook's comparison over seeds: is the idea's gain larger than what changing the seed does?

    python -m fer_kit.study 05_train_regnet_transformer --seeds 3
    python -m fer_kit.study 04 --seeds 3 -p epochs 2

Each seed regenerates the synthetic faces (other people, other videos), the initialisation and the
sampling, runs the notebook by papermill into runs/study/<notebook>/seed<k>/ (with parameters, into a
folder that also names them), and collects the comparisons it recorded (`fer_kit.compare.save`). The
table gives, per comparison, each arm's mean and spread (standard deviation over seeds) on the test split
and the gain's; an idea "wins beyond the seed spread" when its gain is positive on every seed and its mean
exceeds the gain's spread.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import compare
from .paths import output_dir, shown
from .run_notebook import execute, notebook_path, parameter_args, parse_value, record_time


def run_seeds(notebook: str, seeds: list[int], parameters: dict | None = None,
              root: str | Path | None = None, refresh: bool = False) -> dict[int, dict[str, dict]]:
    """Execute the notebook once per seed, each into its own output folder; returns its comparisons.

    refresh=True runs seed 0 as the notebook's default run instead (its runs and figures in the
    project, its outputs saved over the notebook): the committed outputs are then one of the seeds."""
    name = notebook_path(notebook).stem
    root = Path(root) if root is not None else study_path(notebook, parameters).with_suffix("")
    if refresh and parameters:
        raise ValueError("refresh rewrites the notebook's committed outputs, which must be its default run: "
                         f"drop the parameters {sorted(parameters)} or drop refresh")
    found = {}
    for seed in seeds:
        if refresh and seed == 0:
            prefix = name.split("_")[0] + "_"
            for stale in compare.comparison_dir().glob(f"{prefix}*.json"):
                stale.unlink()
            out, seconds = execute(notebook)
            record_time(out)                             # the committed run's own time, as run_notebook writes it
            found[seed] = {k: v for k, v in compare.load_all().items() if k.startswith(prefix)}
        else:
            folder = root / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            out, seconds = execute(notebook, folder / f"{name}.ipynb", {**(parameters or {}), "seed": seed},
                                   env={"FER_KIT_OUTPUT": str(folder.resolve())})
            found[seed] = compare.load_all(folder / "runs" / "comparisons")
        print(f"seed {seed}: {len(found[seed])} comparisons in {seconds:.0f} s ({shown(out)})", flush=True)
    return found


def summarise(found: dict[int, dict[str, dict]]) -> pd.DataFrame:
    """Per comparison: each arm's and the gain's mean and spread over seeds, and the verdict."""
    names = sorted({c for per_seed in found.values() for c in per_seed})
    rows = []
    for c in names:
        records = [per_seed[c] for per_seed in found.values() if c in per_seed]
        a, b = records[0]["names"]
        va = np.array([r[a]["value"] for r in records])
        vb = np.array([r[b]["value"] for r in records])
        gain = va - vb
        spread = float(gain.std(ddof=1)) if len(gain) > 1 else float("nan")
        wins = bool((gain > 0).all() and len(gain) > 1 and gain.mean() > spread)
        rows.append({"comparison": c, "score": records[0]["score"], "idea": a, "baseline": b, "seeds": len(records),
                     "idea mean": va.mean(), "idea sd": va.std(ddof=1) if len(va) > 1 else np.nan,
                     "baseline mean": vb.mean(), "baseline sd": vb.std(ddof=1) if len(vb) > 1 else np.nan,
                     "gain mean": gain.mean(), "gain sd": spread, "gains": ", ".join(f"{g:+.3f}" for g in gain),
                     "seeds beyond own interval": sum(r["gain"]["verdict"] == "better" for r in records),
                     "wins beyond seed spread": wins})
    return pd.DataFrame(rows).set_index("comparison")


def study_path(notebook: str, parameters: dict | None = None) -> Path:
    """runs/study/<notebook>.json for the defaults; a study with parameters gets its own name
    (<notebook>--epochs-4_n_frames-4000.json, its seeds' folders beside it), so it never replaces the
    default study that the notebook shows."""
    name = notebook_path(notebook).stem
    if parameters:
        tag = "_".join(f"{k}-{_named(v)}" for k, v in sorted(parameters.items()))
        name += "--" + tag.replace("/", "-").replace(",", "+")
    return output_dir() / "runs" / "study" / f"{name}.json"


def _named(value):
    """A parameter's value as a study's name shows it: `-p minutes 2.0` is the run `-p minutes 2` makes, so
    both name one study (a whole float is shown as an integer)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def saved(notebook: str) -> pd.DataFrame | None:
    """The last seed study of a notebook at its defaults (runs/study/<notebook>.json), or None if it was
    never run here: a notebook shows it beside its own single-seed result."""
    path = study_path(notebook)
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    table = pd.DataFrame.from_dict(found["summary"], orient="index")
    table.attrs["parameters"] = found.get("parameters") or {}
    return table


def verdict(table: pd.DataFrame) -> str:
    """One sentence per comparison of a study table, written from its numbers."""
    lines = []
    for name, r in table.iterrows():
        won = "wins beyond the seed spread" if r["wins beyond seed spread"] else "does not win beyond the seed spread"
        lines.append(f"{name}: {r['idea']} {r['idea mean']:.3f} (sd {r['idea sd']:.3f}) vs {r['baseline']} "
                     f"{r['baseline mean']:.3f} (sd {r['baseline sd']:.3f}) over {r['seeds']} seeds, gains "
                     f"{r['gains']}: {r['idea']} {won}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(prog="python -m fer_kit.study", description=__doc__.splitlines()[0])
    p.add_argument("notebook", help="number and name (05_train_regnet_transformer) or path")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--first_seed", type=int, default=0)
    p.add_argument("--refresh", action="store_true",
                   help="seed 0 is the notebook's default run: its outputs are saved over the notebook")
    parameter_args(p)
    args = p.parse_args(argv)
    params = {k: parse_value(v) for k, v in args.parameter}
    found = run_seeds(args.notebook, list(range(args.first_seed, args.first_seed + args.seeds)), params,
                      refresh=args.refresh)
    table = summarise(found)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(3).T.to_string())
    path = study_path(args.notebook, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"parameters": params, "per_seed": {str(k): v for k, v in found.items()},
                                "summary": json.loads(table.to_json(orient="index"))}, indent=1))
    print(f"saved {shown(path)}")
    return table


if __name__ == "__main__":
    main()
