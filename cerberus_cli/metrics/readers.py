"""Read ground-truth and predicted instance maps from folders, paired by file stem.

Supported files: PNG, BMP and TIFF (8/16/32-bit single channel), NPY (H x W, or
H x W x 2 = instance ids and per-pixel classes, the CoNIC layout) and MAT (Lizard:
``inst_map`` with ``id`` and ``class``; HoVer-Net/CoNSeP: ``inst_map`` with
``inst_type`` ordered by id, or a ``type_map``).

A folder may be given at several levels: a synthetic/generic dataset root
(``DIR/<task>/...``), a task folder holding ``labels/`` (MAT) or ``instances/``
(with optional ``classes/`` class maps beside it), or a flat folder of maps; or
one map file (``NAME.instances.png`` finds ``NAME.classes.png`` beside it). A
``classes.json`` (``{"0": "background", "1": "other", ...}``) at the dataset root
names the class ids (:func:`find_class_names`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import tifffile

from cerberus_cli.core.class_maps import read_class_names
from cerberus_cli.core.errors import InputError

MAP_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".npy", ".mat")
#: Name parts of a single map file and of the class map found beside it.
_INSTANCES, _CLASSES = ".instances", ".classes"
#: Sub-folders of a dataset root that hold the maps (classes.json sits above them).
_MAP_FOLDERS = ("instances", "labels")


@dataclass
class MapFile:
    """One instance map with its optional class information.

    ``class_map`` is a per-pixel class map (read from ``class_path`` when it came
    from a separate file); ``class_table`` an explicit ``(ids, classes)`` pair (from
    a MAT file).
    """

    instances: np.ndarray
    class_map: np.ndarray | None = None
    class_table: tuple[np.ndarray, np.ndarray] | None = None
    class_path: Path | None = None

    @property
    def has_classes(self) -> bool:
        return self.class_map is not None or self.class_table is not None


@dataclass(frozen=True)
class MapSource:
    """Where one side's maps come from: instance folder and optional class folder.

    Both may instead be single files (one map and its class map).
    """

    instances: Path
    classes: Path | None = None

    @property
    def single(self) -> bool:
        """True when the source is one map file rather than a folder."""
        return self.instances.is_file()


def resolve_source(path: str | os.PathLike[str], task: str,
                   classes: str | os.PathLike[str] | None = None) -> MapSource:
    """Find the folder of instance maps (and class maps) under ``path`` for ``task``.

    ``path`` may also be one map file; ``classes`` is then its class map file,
    found beside it when not given for a map named ``NAME.instances.EXT``
    (``NAME.classes.EXT``).
    """
    root = Path(path)
    if root.is_file():
        return _single_source(root, classes)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of label maps")
    if (root / task).is_dir() and ((root / task / "labels").is_dir()
                                   or (root / task / "instances").is_dir()):
        root = root / task
    class_dir = Path(classes) if classes is not None else None
    if class_dir is not None and not class_dir.is_dir():
        raise InputError(f"{class_dir}: class map folder does not exist")
    if (root / "labels").is_dir():
        return MapSource(root / "labels", class_dir)
    if (root / "instances").is_dir():
        if class_dir is None and (root / "classes").is_dir():
            class_dir = root / "classes"
        return MapSource(root / "instances", class_dir)
    return MapSource(root, class_dir)


def _single_source(path: Path, classes: str | os.PathLike[str] | None) -> MapSource:
    if path.suffix.lower() not in MAP_SUFFIXES:
        raise InputError(f"{path}: not a label map ({', '.join(MAP_SUFFIXES)})")
    if classes is not None:
        cls = Path(classes)
        if not cls.is_file():
            raise InputError(f"{cls}: not a class map file (the ground truth is one map, "
                             f"{path.name})")
        return MapSource(path, cls)
    if path.stem.endswith(_INSTANCES):
        beside = path.with_name(path.stem[: -len(_INSTANCES)] + _CLASSES + path.suffix)
        if beside.is_file():
            return MapSource(path, beside)
    return MapSource(path)


def map_name(path: Path) -> str:
    """The name a map pairs by: its stem, less a ``.instances`` part."""
    stem = path.stem
    return stem[: -len(_INSTANCES)] if stem.endswith(_INSTANCES) else stem


def list_source(source: MapSource) -> tuple[dict[str, Path], dict[str, Path] | None]:
    """Instance maps and class maps (or None) of a source, by name."""
    if source.single:
        name = map_name(source.instances)
        return {name: source.instances}, {name: source.classes} if source.classes else None
    return list_maps(source.instances), list_maps(source.classes) if source.classes else None


def find_class_names(path: str | os.PathLike[str]) -> tuple[Path, dict[int, str]] | None:
    """The ``classes.json`` naming the classes of the maps at ``path``, and its names.

    Looked for in the folder given (or holding the file given), and above it when
    that folder is a dataset's ``instances/`` or ``labels/``.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    candidates = [folder] + ([folder.parent] if folder.name in _MAP_FOLDERS else [])
    for d in candidates:
        names = read_class_names(d)
        if names is not None:
            return d / "classes.json", names
    return None


def list_maps(folder: Path) -> dict[str, Path]:
    """Map files of a folder by stem; two files with one stem are an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in MAP_SUFFIXES:
            if p.stem in found:
                raise InputError(f"{folder}: two maps named {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found


def read_array(path: Path) -> np.ndarray:
    """A 2-D (or H x W x 2 for NPY) array from PNG, TIFF or NPY."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            arr = tifffile.imread(path)
        else:
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError("not a readable image")
    except Exception as exc:  # any decoder failure means a malformed file
        raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and suffix != ".npy":
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise InputError(f"{path}: colour image; expected a single-channel label map")
        arr = arr[..., 0]
    return arr


def read_map(path: Path) -> MapFile:
    """Read one instance map file (with the classes it carries)."""
    if path.suffix.lower() == ".mat":
        return _read_mat(path)
    arr = read_array(path)
    if arr.ndim == 3 and arr.shape[2] == 2:
        return MapFile(arr[..., 0], class_map=arr[..., 1])
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2-D label map, got shape {arr.shape}")
    return MapFile(arr)


def _read_mat(path: Path) -> MapFile:
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError as exc:
        raise InputError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7") from exc
    except Exception as exc:
        raise InputError(f"{path}: cannot read MAT file ({type(exc).__name__}: {exc})") from exc
    if "inst_map" not in mat:
        raise InputError(f"{path}: no 'inst_map' variable")
    inst = np.asarray(mat["inst_map"])
    if "class" in mat:
        classes = np.asarray(mat["class"]).ravel()
        ids = np.asarray(mat["id"]).ravel() if "id" in mat else np.arange(1, classes.size + 1)
        return MapFile(inst, class_table=(ids, classes))
    if "inst_type" in mat:
        classes = np.asarray(mat["inst_type"]).ravel()
        ids = np.asarray(mat["id"]).ravel() if "id" in mat else np.arange(1, classes.size + 1)
        return MapFile(inst, class_table=(ids, classes))
    if "type_map" in mat:
        return MapFile(inst, class_map=np.asarray(mat["type_map"]))
    return MapFile(inst)


def load_map(path: Path, class_path: Path | None = None) -> MapFile:
    """Read one instance map; a separate class map, when given, replaces its own classes."""
    m = read_map(path)
    if class_path is not None:
        cm = read_array(class_path)
        if cm.ndim != 2:
            raise InputError(f"{class_path}: expected a 2-D class map, got shape {cm.shape}")
        m.class_map, m.class_table, m.class_path = cm, None, class_path
    return m
