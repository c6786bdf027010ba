"""Patient-level splits: a patient's slices never straddle train, validation and test.

Folds may be grouped by site (``group_by="site"``): every patient of a site falls in one fold, so
that each fold's model is scored on patients from sites it never saw, as a new hospital's
patients would be. The site is read from the case id (BraTS 2017-2019: ``Brats18_CBICA_AAB_1``
comes from CBICA); a case id that names no site is a group of its own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tumorseg.errors import TumorsegError
from tumorseg.files import load_json, write_json

PARTS = ("train", "val", "test")
#: Room for a million case ids: a larger file is not a split.
MAX_SPLIT_BYTES = 64 * 2**20


#: Ways to group patients into folds: none, or by the site their case id names.
GROUPINGS = ("", "site")
_SITE = re.compile(r"^Brats\d{2}_(?P<site>2013|CBICA|TCIA\d{2}|TMC)_", re.IGNORECASE)


def site_of(case_id: str) -> str:
    """The site a BraTS 2017-2019 case id names (2013, CBICA, TCIA01, ...), else the id itself."""
    found = _SITE.match(case_id)
    return found["site"].upper() if found else case_id


def grouped_folds(ids: list[str], folds: int, group: Callable[[str], str]) -> list[list[str]]:
    """``ids`` (in a seeded order) cut into ``folds`` parts that each hold whole groups: the largest
    group first, each into the part with the fewest patients so far (the first of equals)."""
    sizes = Counter(map(group, ids))
    if len(sizes) < folds:
        raise TumorsegError(f"{len(sizes)} groups (sites) are too few for {folds} grouped folds")
    order = sorted(sizes, key=lambda name: (-sizes[name], [group(i) for i in ids].index(name)))
    parts: list[list[str]] = [[] for _ in range(folds)]
    for name in order:
        smallest = min(range(folds), key=lambda k: len(parts[k]))
        parts[smallest] += [i for i in ids if group(i) == name]
    return parts


def _count(total: int, fraction: float) -> int:
    """Cases for a part: the rounded fraction, but at least one when asked for any."""
    if fraction <= 0:
        return 0
    return max(1, round(total * fraction))


def split_cases(
    case_ids: list[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    folds: int = 0,
    fold: int = 0,
    group_by: str = "",
) -> dict[str, list[str]]:
    """Shuffle patients with ``seed`` and cut them into train, val and test.

    With ``folds`` > 1, the test patients are held out first and the rest are cut into
    ``folds`` parts; part ``fold`` is validation and the others are training (k-fold
    cross-validation with a fixed test set). The same seed gives the same test set for every
    fold. ``group_by="site"`` keeps each site's patients in one fold (``grouped_folds``).
    """
    if group_by not in GROUPINGS:
        raise TumorsegError(
            f"split: group_by must be one of {', '.join(map(repr, GROUPINGS))}, not {group_by!r}"
        )
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise TumorsegError("split fractions must lie in [0, 1)")
    if seed < 0:
        raise TumorsegError(f"split: seed must be 0 or more, not {seed}")
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise TumorsegError("split: case ids are not unique")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_test = _count(len(ids), test_fraction)
    test, rest = order[:n_test], order[n_test:]
    if folds > 1:
        if not 0 <= fold < folds:
            raise TumorsegError(f"fold must be in 0..{folds - 1}, not {fold}")
        if len(rest) < folds:
            raise TumorsegError(f"{len(rest)} cases left after the test set: too few for {folds} folds")
        if group_by:
            val = grouped_folds(rest, folds, site_of)[fold]
        else:
            val = [rest[i] for i in np.array_split(np.arange(len(rest)), folds)[fold]]
    else:
        val = rest[: _count(len(ids), val_fraction)]
    train = [c for c in rest if c not in set(val)]
    if not train:
        raise TumorsegError(f"{len(ids)} cases are too few to leave any for training")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def save_split(path: Path, split: dict[str, list[str]], **provenance: object) -> None:
    """Write the split as JSON (atomically), with how it was made."""
    check_split(split, path)
    write_json(path, {**split, "provenance": provenance})


def load_split(path: Path) -> dict[str, list[str]]:
    if Path(path).is_file() and Path(path).stat().st_size > MAX_SPLIT_BYTES:
        raise TumorsegError(f"{path}: larger than a split file can be")
    try:
        raw = load_json(path)
    except FileNotFoundError as err:
        raise TumorsegError(f"{path}: split file does not exist") from err
    except ValueError as err:
        raise TumorsegError(f"{path}: not a JSON split file ({err})") from err
    if not isinstance(raw, dict) or not all(isinstance(raw.get(p), list) for p in PARTS):
        raise TumorsegError(f"{path}: a split file needs lists 'train', 'val' and 'test'")
    split = {p: [str(c) for c in raw[p]] for p in PARTS}
    check_split(split, path)
    return split


def check_split(split: dict[str, list[str]], where: object) -> None:
    """No patient in two parts."""
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1 :]:
            both = set(split[a]) & set(split[b])
            if both:
                raise TumorsegError(f"{where}: cases in both {a} and {b}: {sorted(both)[:5]}")
