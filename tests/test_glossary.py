"""GLOSSARY.md's action-unit table is the one the kit computes, and each AU moves the region it is scored in."""
import re
from pathlib import Path

from fer_kit.glossary import au_table
from fer_kit.labels import AU_NAMES

GLOSSARY = Path(__file__).resolve().parents[1] / "GLOSSARY.md"


def test_the_glossary_au_table_is_the_measured_one():
    table, faces = au_table()
    rows = re.findall(r"^\| (AU\d+) \| ([a-z ]+) \| ([a-z ]+) \| (\d\.\d\d) \|$", GLOSSARY.read_text(), re.M)
    assert [r[0] for r in rows] == list(AU_NAMES)
    for (au, facs, region, share), (_, row) in zip(rows, table.iterrows()):
        assert (facs, region) == (row["FACS name"], row["region"]), au
        assert float(share) == round(row["share in region"], 2), au
    # each AU alone changes the face, mostly where its region is, far more than the region's share of the image
    assert (table["changed pixels"] > 50).all()
    assert (table["share in region"] >= 0.5).all()
    assert (table["share in region"] >= 4 * table["region's share of the image"]).all()
    assert faces["changed"][0].sum() == 0                       # neutral is the reference itself
    assert (GLOSSARY.parent / "figures" / "action_units.png").stat().st_size > 10_000
