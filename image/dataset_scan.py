"""The kohya dataset layout, scanned once, the same way on the laptop and on the instance.

Layout: `<dataset>/<repeats>_<class tokens>/<image>` with a caption file beside each image (`img.txt` or
`img.caption`). Where no caption exists the class tokens are the caption (kohya's rule; reported as a warning).
Every image is decoded, so a corrupt file fails here, for free, rather than on a rented GPU.
The scan is also the upload list (`DatasetScan.files()`): only the images it accepted and the caption files it
read leave the laptop, never a `.env`, a key or anything else lying in the folder. A symbolic link is followed
only to a regular image (for an image) or caption file (for a caption) and is reported; a symlinked sub-folder is
scanned like any other, and its files are uploaded under the link's name.
Torch-free: only Pillow.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lorarun.image.buckets import BucketSpec, Reso, make_bucket_resolutions, select_bucket, steps_per_epoch
from lorarun.image.ranges import RANGES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSIONS = (".txt", ".caption")
# Pillow refuses (DecompressionBombError) images above twice its MAX_IMAGE_PIXELS (~179 Mpx); we check the header
# against the same figure before decoding, so a 4 Gpx PNG header costs nothing and is a per-file error.
MAX_IMAGE_PIXELS = 2 * 89_478_485
_FOLDER_RE = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class ImageEntry:
    path: str  # relative to the dataset root, POSIX separators
    size: Reso
    caption: str
    caption_from_file: bool
    bucket: Reso
    caption_file: str | None = None  # the caption file read (relative, like `path`), uploaded with the image


@dataclass(frozen=True)
class ScannedFile:
    """One file the scan accepted: where it goes (relative to the uploaded folder) and where it is here."""

    rel: str
    path: Path


@dataclass(frozen=True)
class Subset:
    folder: str
    repeats: int
    class_tokens: str
    is_reg: bool
    images: tuple[ImageEntry, ...]

    @property
    def captions_found(self) -> int:
        return sum(1 for i in self.images if i.caption_from_file)

    @property
    def captions_missing(self) -> int:
        return len(self.images) - self.captions_found


@dataclass(frozen=True)
class DatasetScan:
    root: str
    subsets: tuple[Subset, ...]
    problems: tuple[Problem, ...] = field(default=())
    reg_root: str | None = None

    def files(self, *, reg: bool = False) -> tuple[ScannedFile, ...]:
        """Exactly what to upload for the training (or regularisation) folder: each accepted image and the
        caption file read for it, sorted, paths relative to that folder."""
        root = self.reg_root if reg else self.root
        if root is None:
            return ()
        rels: set[str] = set()
        for subset in self.subsets:
            if subset.is_reg != reg:
                continue
            for image in subset.images:
                rels.add(image.path)
                if image.caption_file:
                    rels.add(image.caption_file)
        return tuple(ScannedFile(rel, Path(root) / rel) for rel in sorted(rels))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def num_images(self) -> int:
        return sum(len(s.images) for s in self.subsets if not s.is_reg)

    @property
    def num_train_images(self) -> int:
        """Images × repeats, kohya's `num_train_images`."""
        return sum(len(s.images) * s.repeats for s in self.subsets if not s.is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(len(s.images) for s in self.subsets if s.is_reg)

    def bucket_counts(self) -> dict[Reso, int]:
        """Samples per bucket in one epoch, regularisation images included as kohya repeats them."""
        counts: Counter[Reso] = Counter()
        for subset in self.subsets:
            if not subset.is_reg:
                for image in subset.images:
                    counts[image.bucket] += subset.repeats
        for bucket, n in _reg_fill(self.subsets, self.num_train_images).items():
            counts[bucket] += n
        return dict(counts)

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(self.bucket_counts(), batch_size)

    def total_steps(
        self, batch_size: int, epochs: int | None, max_steps: int | None = None, grad_accum: int = 1
    ) -> int:
        """Optimizer steps for the run: epochs win over max_steps, as in kohya."""
        per_epoch = math.ceil(self.steps_per_epoch(batch_size) / grad_accum)
        if epochs is not None:
            return per_epoch * epochs
        return max_steps or 0

    def epochs_for(self, batch_size: int, epochs: int | None, max_steps: int | None, grad_accum: int = 1) -> int:
        per_epoch = math.ceil(self.steps_per_epoch(batch_size) / grad_accum)
        if epochs is not None:
            return epochs
        return max(1, math.ceil((max_steps or 0) / max(per_epoch, 1)))


def _reg_fill(subsets: tuple[Subset, ...], num_train_images: int) -> Counter[Reso]:
    """kohya repeats regularisation images until they match the number of training images (one pass at the
    folder's repeats, then one extra repeat per image, round-robin)."""
    reg_images = [(image, subset) for subset in subsets if subset.is_reg for image in subset.images]
    counts: Counter[Reso] = Counter()
    if not reg_images or num_train_images == 0:
        return counts
    n = 0
    first_loop = True
    while n < num_train_images:
        for image, subset in reg_images:
            add = subset.repeats if first_loop else 1
            counts[image.bucket] += add
            n += add
            if n >= num_train_images:
                break
        first_loop = False
    return counts


def scan_dataset(
    root: Path, bucket_spec: BucketSpec, *, reg_root: Path | None = None, caption_extension: str = ".txt"
) -> DatasetScan:
    """Scan `root` (and `reg_root`), collecting every problem rather than stopping at the first."""
    problems: list[Problem] = []
    predefined = (
        make_bucket_resolutions(bucket_spec.resolution, bucket_spec.min_size, bucket_spec.max_size, bucket_spec.steps)
        if bucket_spec.enable_bucket and not bucket_spec.no_upscale
        else None
    )
    subsets: list[Subset] = []
    for folder_root, is_reg in ((root, False), (reg_root, True)):
        if folder_root is None:
            continue
        label = "regularisation folder" if is_reg else "dataset folder"
        if not folder_root.is_dir():
            problems.append(Problem("error", str(folder_root), f"{label} does not exist or is not a folder"))
            continue
        loose = sorted(p.name for p in folder_root.iterdir() if _is_image(p))
        if loose:
            problems.append(
                Problem(
                    "error",
                    str(folder_root / loose[0]),
                    f"image directly in the {label}; kohya layout needs sub-folders like '10_mychar' (10 repeats)",
                )
            )
        for sub in sorted(p for p in folder_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            subset = _scan_subset(sub, folder_root, is_reg, bucket_spec, predefined, caption_extension, problems)
            if subset is not None:
                subsets.append(subset)
    if not any(s.images for s in subsets if not s.is_reg) and not any(p.severity == "error" for p in problems):
        problems.append(
            Problem(
                "error",
                str(root),
                "no training images found (.png .jpg .jpeg .webp .bmp) in any '<repeats>_<name>' sub-folder",
            )
        )
    return DatasetScan(
        root=str(root),
        subsets=tuple(subsets),
        problems=tuple(problems),
        reg_root=str(reg_root) if reg_root is not None else None,
    )


def _is_image(path: Path) -> bool:
    return (path.is_file() or path.is_symlink()) and path.suffix.lower() in IMAGE_EXTENSIONS


def _scan_subset(
    folder: Path,
    root: Path,
    is_reg: bool,
    spec: BucketSpec,
    predefined: list[Reso] | None,
    caption_extension: str,
    problems: list[Problem],
) -> Subset | None:
    images = sorted(p for p in folder.iterdir() if _is_image(p))
    match = _FOLDER_RE.match(folder.name)
    if not match:
        if images:
            problems.append(
                Problem(
                    "error",
                    str(folder),
                    f"folder name has no repeat prefix; rename it to e.g. '10_{folder.name}' (10 repeats per epoch)",
                )
            )
        return None
    repeats, class_tokens = int(match.group(1)), match.group(2).strip()
    allowed = RANGES["dataset.repeats"]
    if not allowed.contains(repeats):
        shown = str(repeats) if len(str(repeats)) <= 12 else f"{repeats:.3g}"
        problems.append(
            Problem(
                "error",
                str(folder),
                f"repeat count {shown} is outside the range a real job has; "
                f"rename the folder with a count {allowed.describe()}",
            )
        )
        return None
    if folder.is_symlink():
        problems.append(
            Problem(
                "warning",
                str(folder),
                f"folder is a symbolic link to {os.path.realpath(folder)}; "
                f"its images are scanned and uploaded as {folder.name}/",
            )
        )
    entries: list[ImageEntry] = []
    missing: list[str] = []
    transparent: list[str] = []
    for path in images:
        if not _link_target_ok(path, IMAGE_EXTENSIONS, "an image", problems):
            continue
        size = _open_image(path, problems, transparent)
        if size is None:
            continue
        caption, from_file, caption_path = _read_caption(path, caption_extension, problems)
        if caption is None:
            continue
        if not from_file:
            missing.append(path.name)
            caption = class_tokens
        entries.append(
            ImageEntry(
                path=path.relative_to(root).as_posix(),
                size=size,
                caption=caption,
                caption_from_file=from_file,
                bucket=select_bucket(size, spec, predefined),
                caption_file=caption_path.relative_to(root).as_posix() if caption_path else None,
            )
        )
    if missing:
        example = folder / missing[0]
        problems.append(
            Problem(
                "warning",
                str(example),
                f"no caption file; using the class tokens {class_tokens!r} as its caption"
                + (f" (and for {len(missing) - 1} more image(s) in this folder)" if len(missing) > 1 else ""),
            )
        )
    if transparent:
        problems.append(
            Problem(
                "warning",
                str(folder / transparent[0]),
                f"image has transparent pixels; it is trained flattened onto {FLATTEN_BACKGROUND_NAME}"
                + (f" (and {len(transparent) - 1} more image(s) in this folder)" if len(transparent) > 1 else "")
                + "; flatten it yourself to choose another background",
            )
        )
    if not images:
        problems.append(Problem("warning", str(folder), "folder has no images; it is ignored"))
    return Subset(folder=folder.name, repeats=repeats, class_tokens=class_tokens, is_reg=is_reg, images=tuple(entries))


def _link_target_ok(path: Path, suffixes: tuple[str, ...], what: str, problems: list[Problem]) -> bool:
    """A symbolic link is followed only to a regular file of the expected kind (reported as a warning);
    anything else (a config file, a key, a folder, a dangling link) is an error and is never read or sent."""
    if not path.is_symlink():
        return True
    target = Path(os.path.realpath(path))
    if target.is_file() and target.suffix.lower() in suffixes:
        problems.append(Problem("warning", str(path), f"symbolic link to {target}; that file is uploaded"))
        return True
    problems.append(
        Problem(
            "error",
            str(path),
            f"symbolic link to {target}, which is not {what} file "
            f"({', '.join(suffixes)}); replace the link with the file itself",
        )
    )
    return False


def _open_image(path: Path, problems: list[Problem], transparent: list[str] | None = None) -> Reso | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below, against our limit
            with Image.open(path) as im:
                size = im.size
                if size[0] * size[1] > MAX_IMAGE_PIXELS:  # from the header alone: never decode a bomb
                    problems.append(
                        Problem(
                            "error",
                            str(path),
                            f"image claims {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:,.0f} "
                            f"Mpx), more than {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx; resize it",
                        )
                    )
                    return None
                im.load()  # decode every pixel: a truncated file fails here, not on the GPU
                if transparent is not None and has_transparency(im):
                    transparent.append(path.name)
    except Image.DecompressionBombError as exc:
        reason = (
            str(exc).split(" could be")[0].rstrip(", ")
        )  # Pillow: "Image size (W x H pixels) exceeds limit of N pixels, ..."
        problems.append(
            Problem(
                "error",
                str(path),
                f"image is larger than {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx, too "
                f"large to decode safely ({reason}); resize it",
            )
        )
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(Problem("error", str(path), f"cannot read image ({reason}); replace or remove it"))
        return None
    if min(size) < 8:
        problems.append(Problem("error", str(path), f"image is only {size[0]}x{size[1]} pixels"))
        return None
    return size


# What the engine puts behind transparent pixels (image/engine/data.py `load_image`). kohya's `convert("RGB")`
# drops the alpha channel and shows whatever colour the transparent pixels happen to store (often black);
# a stated background is one the user can predict.
FLATTEN_BACKGROUND = (255, 255, 255)
FLATTEN_BACKGROUND_NAME = "white"


def has_transparency(im) -> bool:
    """Whether a decoded PIL image has any pixel that is not fully opaque."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        alpha = im.convert("RGBA").getchannel("A") if im.mode == "P" else im.getchannel("A")
        return alpha.getextrema()[0] < 255
    return "transparency" in im.info and im.mode in ("RGB", "L")  # a colour key marks pixels transparent


def _read_caption(image: Path, caption_extension: str, problems: list[Problem]) -> tuple[str | None, bool, Path | None]:
    """(caption, whether it came from a file, the caption file read). None as the caption: an error was recorded."""
    candidates = [image.with_suffix(caption_extension)]
    candidates += [image.with_suffix(ext) for ext in CAPTION_EXTENSIONS if ext != caption_extension]
    for candidate in candidates:
        if candidate.is_file() or candidate.is_symlink():
            if not _link_target_ok(candidate, CAPTION_EXTENSIONS, "a caption", problems):
                return None, False, None
            try:
                text = candidate.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                problems.append(
                    Problem(
                        "error",
                        str(candidate),
                        f"caption is not UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8",
                    )
                )
                return None, False, None
            first_line = text.splitlines()[0].strip() if text.strip() else ""
            # kohya uses the first line; an empty file counts as missing (but is still the file the engine reads)
            return first_line, bool(first_line), candidate
    return "", False, None
