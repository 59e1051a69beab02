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
# FACS names of those action units (Ekman & Friesen's Facial Action Coding System), in the same order.
AU_FACS_NAMES: tuple[str, ...] = (
    "inner brow raiser", "outer brow raiser", "brow lowerer", "cheek raiser", "lid tightener", "upper lip raiser",
    "lip corner puller", "lip corner depressor", "lip tightener", "lip pressor", "lips part", "jaw drop",
)
# Frames per class in the Aff-Wild2 EXPR training data (paper A, Table 1, "Aff-Wild2" row).
AFFWILD2_EXPR_COUNTS: tuple[int, ...] = (177_498, 16_573, 10_810, 9_080, 95_633, 79_862, 31_637, 165_866)

# Invalid markers in the ABAW annotation files.
EXPR_INVALID = -1
AU_INVALID = -1
VA_INVALID = -5.0

# ABAW4 Learning-from-Synthetic-Data: the 6 basic expressions, Aff-Wild2 order without Neutral and Other
# (label = Aff-Wild2 index - 1). Folder names as shipped; ANGER was once shipped misspelt as ANGERE.
LSD_CLASSES: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
LSD_FOLDERS: tuple[str, ...] = ("ANGER", "DISGUST", "FEAR", "HAPPINESS", "SADNESS", "SURPRISE")

# Label orders of the other datasets the readers accept (paper_code_notes §0; FER2013 and ExpW are not in §0:
# their orders are the ones their own readmes give), and where each index goes in EXPR_CLASSES above.
# AffectNet-8 index 7 is Contempt, which Aff-Wild2 has no class for (its index 7 is Other): it is left out.
AFFECTNET_CLASSES: tuple[str, ...] = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
AFFECTNET_TO_AFFWILD2: dict[int, int] = {0: 0, 1: 4, 2: 5, 3: 6, 4: 3, 5: 2, 6: 1}
# RAF-DB basic: list_patition_label.txt holds 1..7; index = file label - 1.
RAFDB_CLASSES: tuple[str, ...] = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
RAFDB_TO_AFFWILD2: dict[int, int] = {0: 6, 1: 3, 2: 2, 3: 4, 4: 5, 5: 1, 6: 0}
FER2013_CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
FER2013_TO_AFFWILD2: dict[int, int] = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 0}
EXPW_CLASSES: tuple[str, ...] = FER2013_CLASSES
EXPW_TO_AFFWILD2: dict[int, int] = FER2013_TO_AFFWILD2
