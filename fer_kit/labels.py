"""Label orders and class statistics shared by every reader, model and notebook.

Every dataset is mapped to the Aff-Wild2 order below before it reaches a model, so a class index means
the same thing everywhere in the kit (see DESIGN.md §4 and paper_code_notes §0).
"""
from __future__ import annotations

# Aff-Wild2 EXPR order (ABAW3 and later); ABAW 2020/2021 used the first 7 (no "Other").
EXPR_CLASSES: tuple[str, ...] = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other",
)
# The 12 action units annotated in Aff-Wild2, in file column order.
AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)
# Frames per class in the Aff-Wild2 EXPR training data (paper A, Table 1, "Aff-Wild2" row).
AFFWILD2_EXPR_COUNTS: tuple[int, ...] = (177_498, 16_573, 10_810, 9_080, 95_633, 79_862, 31_637, 165_866)

# Invalid markers in the ABAW annotation files.
EXPR_INVALID = -1
AU_INVALID = -1
VA_INVALID = -5.0
