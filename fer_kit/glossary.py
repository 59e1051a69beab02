"""The action-unit table of GLOSSARY.md, computed: each AU's FACS name, the face region the kit scores it
in, and a synthetic face with that AU alone.

    python -m fer_kit.glossary            # redraws figures/action_units.png
"""
from __future__ import annotations

import pandas as pd

from . import plots
from .data.synthetic import render_action_units
from .explain import AU_REGION, region_mask
from .labels import AU_FACS_NAMES, AU_NAMES


def au_table(size: int = 112, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """One row per AU: FACS name, region, and the share of the pixels it changes that lie in that region
    (the renderer moves what FACS says the AU moves, and the pointing score looks there)."""
    faces = render_action_units(size, seed)
    rows = []
    for k, au in enumerate(AU_NAMES, 1):
        region = AU_REGION[au]
        inside = region_mask(faces["landmarks"][0], region, size) | region_mask(faces["landmarks"][k], region, size)
        changed = faces["changed"][k]
        rows.append({"AU": au, "FACS name": AU_FACS_NAMES[k - 1], "region": region,
                     "changed pixels": int(changed.sum()),
                     "share in region": float((changed & inside).sum() / max(changed.sum(), 1)),
                     "region's share of the image": float(inside.mean())})
    return pd.DataFrame(rows), faces


def au_figure(path=None, size: int = 160, seed: int = 0):
    table, faces = au_table(size, seed)
    captions = ["no action unit"] + [f"{r['FACS name']}\n({r['region']})" for _, r in table.iterrows()]
    return plots.action_units(faces["images"], faces["names"], captions, faces["changed"], path=path)


if __name__ == "__main__":
    from .paths import project_dir

    au_figure(project_dir() / "figures" / "action_units.png")
    print(au_table()[0].round(2).to_string(index=False))
