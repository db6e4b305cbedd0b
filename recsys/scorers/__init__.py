"""Fitted stage-one scorers: the runtime halves of every model (plain arrays, a little config).

``training/fit_*.py`` fits them; the evaluation, the ranked pipeline and the registered model
only score with them. :func:`save_scorer` / :func:`load_scorer` store one as a folder of data
(``scorer.json`` naming its kind, ``arrays/*.npy``, the text encoder as a Hugging Face folder).
"""

from __future__ import annotations

from pathlib import Path

from recsys.errors import RecsysError
from recsys.scorers.base import Scorer, StoredScorer, binarize, check_block, read_json, write_json
from recsys.scorers.factors import FactorScorer
from recsys.scorers.item_item import ItemItemScorer
from recsys.scorers.popularity import PopularityScorer, RandomScorer
from recsys.scorers.text import TextScorer

__all__ = ["Scorer", "StoredScorer", "FactorScorer", "ItemItemScorer", "PopularityScorer", "RandomScorer",
           "TextScorer", "binarize", "check_block", "save_scorer", "load_scorer", "KINDS"]

KINDS: dict[str, type[StoredScorer]] = {cls.KIND: cls for cls in (FactorScorer, ItemItemScorer, PopularityScorer,
                                                                   TextScorer)}
"""Stored kind -> scorer class; a registered model names one of these for each of its models."""
SETTINGS = "scorer.json"


def save_scorer(scorer: StoredScorer, folder: Path) -> None:
    """Write ``scorer`` into ``folder`` (which must not hold another scorer)."""
    if not isinstance(scorer, StoredScorer):
        raise TypeError(f"{type(scorer).__name__} cannot be stored in a registered model; "
                        f"storable scorers: {', '.join(sorted(KINDS))}")
    folder.mkdir(parents=True, exist_ok=True)
    settings = scorer.save(folder)
    write_json(folder / SETTINGS, {"kind": scorer.KIND, "name": scorer.name} | settings)


def load_scorer(folder: Path) -> StoredScorer:
    """The scorer :func:`save_scorer` wrote into ``folder``."""
    settings = read_json(folder / SETTINGS)
    kind = settings.get("kind")
    if kind not in KINDS:
        raise RecsysError(f"{folder / SETTINGS}: unknown scorer kind {kind!r}; this recsys reads "
                          f"{', '.join(sorted(KINDS))} (a model from a newer recsys?)")
    return KINDS[kind].load(folder, settings)
