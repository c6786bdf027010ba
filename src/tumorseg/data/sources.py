"""Finding cases on disk: BraTS case folders, folders of them, and Kaggle slice folders.

Nothing is read here but directory listings; each ``Source`` reads and checks its case when
``load`` is called, so that one bad case can be reported (or skipped) on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tumorseg.data import brats, kaggle
from tumorseg.data.case import Case
from tumorseg.errors import TumorsegError


@dataclass
class Source:
    """A case found on disk and not yet read: ``load`` reads and checks it."""

    case_id: str
    where: str
    load: Callable[[], Case]


def kaggle_sources(folder: Path) -> list[Source]:
    volumes = kaggle.find_volumes(folder)
    kaggle.check_meta(folder, volumes)
    sources = []
    for number, slices in volumes.items():
        load = lambda n=number, s=slices: kaggle.read_volume(n, s)  # noqa: E731
        sources.append(Source(f"volume_{number}", f"{folder}/volume_{number}_slice_*.h5", load))
    return sources


def discover(
    paths: list[Path], require_label: bool = True, skip_invalid: bool = False
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Find the cases under each path: a case folder, a folder of them, or a Kaggle folder.

    Returns the sources and, when ``skip_invalid``, the (place, problem) of folders skipped.
    """
    sources: list[Source] = []
    invalid: list[tuple[str, str]] = []
    for path in paths:
        if not path.exists():
            raise TumorsegError(f"{path}: does not exist")
        if not path.is_dir():
            raise TumorsegError(f"{path}: expected a case folder, a folder of cases or a Kaggle folder")
        if kaggle.is_kaggle_folder(path):
            sources += kaggle_sources(path)
            continue
        folders = brats.find_case_folders(path)
        if not folders:
            raise TumorsegError(f"{path}: no BraTS case folders or Kaggle slice files found")
        for folder in folders:
            try:
                files = brats.find_case_files(folder, require_label)
            except TumorsegError as err:
                if not skip_invalid:
                    raise
                invalid.append((str(folder), str(err)))
                continue
            sources.append(Source(files.case_id, str(folder), lambda f=files: brats.read_case(f)))
    return sources, invalid
