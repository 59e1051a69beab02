"""Is one run's pointing score its recipe's? Grad-CAM pointing of several trained runs against their untrained twins.

    python benchmarks/pointing_over_seeds.py [RUN_DIR ...] [--layers trunk layer3] [--faces 120]

Notebook 10 scores one run, notebook 04's committed default (seed 0). This script scores any number of
run folders of one recipe, by default the DAN runs that `python -m fer_kit.study 04_train_dan --seeds 3
-p compare True` leaves in runs/study/04_train_dan--compare-True/seed*/runs/04_train_dan (seeds 0-2: new
faces, initialisation and sampling each). For each run and layer: the mean Grad-CAM pointing score of the
true class over its own validation faces, trained and at the same seed's random initialisation, each with
a 95% interval over videos, and the paired gap (`explain.pointing_gap`); then the mean over runs and how
many runs meet the bars notebook 10 prints (`explain.POINTING_BAR` trained, `explain.UNTRAINED_BAR`
untrained).
"""
import argparse
from pathlib import Path

import pandas as pd

from fer_kit import explain, study
from fer_kit.paths import shown


def score_run(run_dir: Path, layers: list[str], n_faces: int) -> list[dict]:
    model, cfg = explain.load_run(run_dir)
    faces = explain.load_faces(cfg, n_faces, seed=0)
    scores = pd.concat([explain.pointing_scores(net, faces, ["gradcam"], layers=layers).assign(state=state)
                        for state, net in (("trained", model), ("untrained", explain.untrained_model(cfg)))])
    scores = scores.assign(model="dan", method="Grad-CAM")
    return [{"seed": cfg.seed, **explain.pointing_gap(scores, faces, layer)} for layer in layers]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="run folders (default: the 04 seed study's DAN runs)")
    p.add_argument("--layers", nargs="+", default=["trunk", "layer3"])
    p.add_argument("--faces", type=int, default=120)
    args = p.parse_args()
    study_dir = study.study_path("04", {"compare": True}).with_suffix("")
    runs = [Path(r) for r in args.runs] or sorted(study_dir.glob("seed*/runs/04_train_dan"))
    if not runs:
        raise SystemExit("no run folders given and none from the 04 study here: run "
                         "`python -m fer_kit.study 04_train_dan --seeds 3 -p compare True` first, or pass run folders")
    rows = []
    for run in runs:
        for r in score_run(run, args.layers, args.faces):
            print(f"seed {r['seed']} ({shown(run)}): {explain.pointing_sentence(r)}", flush=True)   # notebook 10's words
            rows.append({"layer": r["layer"], "trained": r["trained"], "untrained": r["untrained"],
                         "beyond": r["gap"]["verdict"] == "better"})
    df = pd.DataFrame(rows)
    for layer, d in df.groupby("layer", sort=False):
        bars = int(((d.trained >= explain.POINTING_BAR) & (d.untrained < explain.UNTRAINED_BAR)).sum())
        print(f"{layer}: over {len(d)} runs trained {d.trained.mean():.2f} (sd {d.trained.std():.2f}), "
              f"untrained {d.untrained.mean():.2f} (sd {d.untrained.std():.2f}); "
              f"gap beyond its own interval in {int(d.beyond.sum())} of {len(d)}; "
              f"both bars (>= {explain.POINTING_BAR}, < {explain.UNTRAINED_BAR}) met in {bars}")


if __name__ == "__main__":
    main()
