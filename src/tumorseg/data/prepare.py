"""``tumorseg prepare``: find cases, preprocess them, and write them into a store, whole or not at all.

A store is replaced atomically: a temporary file is written beside it and renamed over the old
one only after every case is written, so a failed or killed run leaves the old store (or none).
A lock beside the store refuses a second writer.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
from tqdm import tqdm

from tumorseg import interrupts
from tumorseg.data.preprocess import preprocess
from tumorseg.data.sources import Source, discover
from tumorseg.data.store import Store, check_spacing, write_case, write_root_attrs
from tumorseg.errors import TumorsegError


@dataclass
class PrepareResult:
    out: Path
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)


def prepare_store(
    paths: list[Path],
    out: Path,
    *,
    existing: str = "error",
    skip_invalid: bool = False,
    require_label: bool = True,
    progress: bool | None = None,
) -> PrepareResult:
    """Add the cases under ``paths`` to the store ``out`` (created when missing).

    ``existing`` says what to do with a case the store already holds: "error", "skip" or
    "replace". Bad cases stop the run unless ``skip_invalid``; either way ``out`` is only ever
    replaced whole, after every case was written.
    """
    if existing not in ("error", "skip", "replace"):
        raise ValueError(f"existing must be error, skip or replace, not {existing!r}")
    result = PrepareResult(out)
    sources, result.invalid = discover(paths, require_label, skip_invalid)
    check_unique(sources)
    if out.is_dir():
        raise TumorsegError(f"{out}: is a folder; give the store's file name, e.g. {out / 'store.h5'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    old_ids: list[str] = []
    if out.exists():
        with Store(out) as old:
            old_ids = old.case_ids
    sources = plan(sources, old_ids, existing, result)
    if not sources:
        if not old_ids:
            raise TumorsegError(f"{out}: no valid case to write")
        return result
    write_store(
        out, sources, [c for c in old_ids if c not in result.replaced], result, skip_invalid, progress
    )
    return result


def check_unique(sources: list[Source]) -> None:
    seen: dict[str, str] = {}
    for source in sources:
        if source.case_id in seen:
            raise TumorsegError(f"{source.where}: case {source.case_id} also found at {seen[source.case_id]}")
        seen[source.case_id] = source.where


def plan(sources: list[Source], old_ids: list[str], existing: str, result: PrepareResult) -> list[Source]:
    """The sources to write, after applying the ``existing`` policy to cases the store holds."""
    clash = [s.case_id for s in sources if s.case_id in old_ids]
    if clash and existing == "error":
        raise TumorsegError(
            f"{result.out}: already holds {len(clash)} of these cases ({', '.join(clash[:5])}"
            f"{', ...' if len(clash) > 5 else ''}); use --existing skip or --existing replace"
        )
    if existing == "skip":
        result.skipped_existing = clash
        return [s for s in sources if s.case_id not in old_ids]
    result.replaced = clash
    return sources


def write_store(
    out: Path,
    sources: list[Source],
    keep: list[str],
    result: PrepareResult,
    skip_invalid: bool,
    progress: bool | None,
) -> None:
    """Write the kept cases of the old store and the new ones to a temporary file, then rename it."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        stale.unlink()  # left by a killed run; we hold the lock, so nobody is writing it
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as handle:
            write_root_attrs(handle)
            cases = handle.create_group("cases")
            first = None  # (case id, voxel size) every other case must share
            if keep:
                with h5py.File(out, "r") as old:
                    for case_id in keep:
                        old.copy(old["cases"][case_id], cases, name=case_id)
                    first = (keep[0], tuple(cases[keep[0]].attrs["spacing"]))
            bar = tqdm(
                sources, desc="prepare", unit="case", disable=None if progress is None else not progress
            )
            lines = progress is None and not sys.stdout.isatty()  # no bar (logs, CI): a line per case
            for number, source in enumerate(bar, start=1):
                interrupts.check()
                bar.set_postfix_str(source.case_id)
                if lines:
                    print(f"prepare {number}/{len(sources)}: {source.case_id}", flush=True)
                try:
                    prepared = preprocess(source.load())
                    first = first or (prepared.case_id, prepared.spacing)
                    check_spacing(prepared.spacing, first, source.where)
                    write_case(cases, prepared)
                except TumorsegError as err:
                    if not skip_invalid:
                        raise
                    result.invalid.append((source.where, str(err)))
                    continue
                result.added.append(source.case_id)
            if not len(cases):
                raise TumorsegError(f"{out}: no valid case to write")
        os.replace(tmp, out)
    except OSError as err:
        raise TumorsegError(f"{out}: could not write the store ({err})") from err
    finally:
        tmp.unlink(missing_ok=True)
