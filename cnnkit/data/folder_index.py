"""The file index of an ImageNet-style tree, ROOT/<split>/<class>/<image>, cached between runs.

Listing ImageNet's 1.28 million training files takes minutes on a network disk; the index is
therefore kept in a JSON file under the user's cache directory (`$CNNKIT_CACHE_DIR`, else
`$XDG_CACHE_HOME/cnnkit`, else `~/.cache/cnnkit`), in `imagefolder/<sha1 of ROOT's absolute
path>.json`. It holds, per split, each class folder's modification time (nanoseconds) next to
its sorted file names. A later run stats the split and class folders only (1,000 stats for
ImageNet) and rescans when any time differs: adding, removing or renaming a file or a class
changes its folder's time. Files rewritten in place keep their folder's time; the index holds
names only, so that does not matter.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import CnnkitError, DataError, counted

# the one list of image files cnnkit reads, for training, evaluation and prediction alike
# (matched case-insensitively): what PIL decodes without plugins; a GIF or TIFF gives its
# first frame
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm",
              ".pgm")
SPLITS = ("train", "val", "test")  # test is optional
FORMAT = 2  # bump when the cache file's layout changes; older files are then rescanned


@dataclass
class SplitIndex:
    files: list[str]  # paths relative to ROOT/<split>, e.g. "cat/001.jpg"
    labels: list[int]  # index into the dataset's class list


@dataclass
class FolderIndex:
    classes: list[str]  # sorted class folder names of train/
    splits: dict[str, SplitIndex]
    left_out: dict[str, int] = field(default_factory=dict)  # suffix -> files not images


def left_out_line(where: str | Path, left_out: dict[str, int]) -> str:
    """`photos: left out 3 files that are not images (.txt 2, .heic 1)`, the one line that
    counts them; cnnkit reads .jpg, .png, ... (EXTENSIONS)."""
    n = sum(left_out.values())
    kinds = ", ".join(f"{suffix or '(no suffix)'} {count}" for suffix, count in
                      sorted(left_out.items(), key=lambda item: (-item[1], item[0])))
    return (f"{where}: left out {counted(n, 'file')} that {'is' if n == 1 else 'are'} not "
            f"{'an image' if n == 1 else 'images'} ({kinds}); images are "
            f"{', '.join(EXTENSIONS)}")


def suffix_counts(names: list[str]) -> dict[str, int]:
    """Files by lower-case suffix."""
    counts: dict[str, int] = {}
    for name in names:
        suffix = Path(name).suffix.lower()
        counts[suffix] = counts.get(suffix, 0) + 1
    return counts


def cache_path(root: Path) -> Path:
    base = os.environ.get("CNNKIT_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = str(Path(xdg) / "cnnkit") if xdg else str(Path.home() / ".cache" / "cnnkit")
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()
    return Path(base) / "imagefolder" / f"{digest}.json"


def index_folder(root: str | Path) -> FolderIndex:
    """The classes and files of every split under ROOT, from the cache when it is current."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data.root not found (expected ROOT/train/<class>/<image>)")
    listing = _cached_listing(root)
    return _check(root, listing)


def _cached_listing(root: Path) -> dict[str, dict[str, dict]]:
    """split -> class -> {"mtime": ns, "files": [names]}, rescanning what changed."""
    path = cache_path(root)
    cached = _read_cache(path, root)
    listing, changed = {}, cached is None
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            changed |= cached is not None and split in cached
            continue
        old = (cached or {}).get(split, {})
        listing[split], split_changed = _list_split(split_dir, old)
        changed |= split_changed
    if changed:
        _write_cache(path, root, listing)
    return listing


def _list_split(split_dir: Path, old: dict[str, dict]) -> tuple[dict[str, dict], bool]:
    classes = sorted(e.name for e in os.scandir(split_dir)
                     if e.is_dir() and not e.name.startswith("."))
    listing, changed = {}, set(classes) != set(old)
    for name in classes:
        # the time is read before the listing, so a file added meanwhile forces a later rescan
        mtime = os.stat(split_dir / name).st_mtime_ns
        if name in old and old[name]["mtime"] == mtime:
            listing[name] = old[name]
            continue
        files, others = list_images(split_dir / name)
        listing[name] = {"mtime": mtime, "files": files, "others": suffix_counts(others)}
        changed = True
    return listing, changed


def list_images(class_dir: Path) -> tuple[list[str], list[str]]:
    """Image file names in one class folder (not recursive), sorted; and the names of the
    other files there (hidden files aside), which are left out."""
    names = [e.name for e in os.scandir(class_dir)
             if not e.name.startswith(".") and _is_file(e, class_dir)]
    images = sorted(n for n in names if n.lower().endswith(EXTENSIONS))
    return images, sorted(n for n in names if not n.lower().endswith(EXTENSIONS))


def _is_file(entry: os.DirEntry, class_dir: Path) -> bool:
    try:
        return entry.is_file()
    except OSError as exc:  # a symlink loop (ELOOP), a file we may not stat
        raise DataError(f"{class_dir / entry.name}: cannot be read "
                        f"({exc.strerror or exc})") from None


def _read_cache(path: Path, root: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT \
            or data.get("root") != str(root.resolve()) or not _well_formed(data.get("splits")):
        return None
    return data["splits"]


def _well_formed(splits: object) -> bool:
    """split -> class -> {"mtime": int, "files": [str]}; anything else is rescanned."""
    return isinstance(splits, dict) and all(
        isinstance(by_class, dict) and all(
            isinstance(entry, dict) and isinstance(entry.get("mtime"), int)
            and isinstance(entry.get("files"), list) and isinstance(entry.get("others"), dict)
            for entry in by_class.values())
        for by_class in splits.values())


def _write_cache(path: Path, root: Path, listing: dict) -> None:
    """Best effort: an unwritable cache directory only costs the next run a rescan."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": FORMAT, "root": str(root.resolve()),
                                            "splits": listing}))
    except (OSError, CnnkitError):
        pass


def _check(root: Path, listing: dict[str, dict[str, dict]]) -> FolderIndex:
    for split in ("train", "val"):
        if split not in listing:
            raise DataError(f"{root / split}: not found; imagefolder needs ROOT/train/<class>/ "
                            f"and ROOT/val/<class>/ (ROOT/test/ is optional)")
    classes = list(listing["train"])
    if not classes:
        raise DataError(f"{root / 'train'}: no class folders, so no images at all "
                        f"(expected train/<class>/<image>, with {', '.join(EXTENSIONS)})")
    splits, left_out = {}, {}
    for split, by_class in listing.items():
        _check_classes(root / split, list(by_class), classes)
        for entry in by_class.values():
            for suffix, count in entry["others"].items():
                left_out[suffix] = left_out.get(suffix, 0) + count
        files, labels = [], []
        for label, name in enumerate(classes):
            if not by_class[name]["files"]:
                raise DataError(f"{root / split / name}: empty class folder (no "
                                f"{', '.join(e.lstrip('.') for e in EXTENSIONS)} files)")
            files += [f"{name}/{f}" for f in by_class[name]["files"]]
            labels += [label] * len(by_class[name]["files"])
        splits[split] = SplitIndex(files, labels)
    return FolderIndex(classes, splits, left_out)


def _check_classes(split_dir: Path, found: list[str], classes: list[str]) -> None:
    if found == classes:
        return
    missing = [c for c in classes if c not in found]
    extra = [c for c in found if c not in classes]
    parts = ([f"lacks {_names(missing)}"] if missing else []) + \
        ([f"has {_names(extra)} not in train/"] if extra else [])
    raise DataError(f"{split_dir}: its classes differ from train/'s: {'; '.join(parts)}")


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
