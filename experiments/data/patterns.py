"""Binary-pattern datasets for Hopfield networks: letter glyphs, binarised MNIST digits and
patterns read from a file (`pattern_file`: text or .npy).

For: a handful of {0,1} patterns to store and recall. Every split holds the same clean
patterns (x: (P, N) float32, y: arange(P) int32); evaluation corrupts them itself.
meta carries "image_shape" (H, W) for reshaping/corrupting and "names" for the legend.

Not for: classification data (use the `mnist` dataset) or anything large; there is no
validation split, and `val_size`, `train_subset` and `test_subset` are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from experiments.data.idx import read_idx_gz_cached
from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

GLYPH_SIZE = 10

# 10x10 glyphs, strokes two pixels wide. The default set (T, L, X, H) has small pairwise
# bipolar overlaps (|s.s'| <= 28 of 100), which is what Hebbian storage needs.
GLYPHS: dict[str, tuple[str, ...]] = {
    "T": (
        "##########",
        "##########",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
    ),
    "L": (
        "##........",
        "##........",
        "##........",
        "##........",
        "##........",
        "##........",
        "##........",
        "##........",
        "##########",
        "##########",
    ),
    "X": (
        "#........#",
        "##......##",
        ".##....##.",
        "..##..##..",
        "...####...",
        "...####...",
        "..##..##..",
        ".##....##.",
        "##......##",
        "#........#",
    ),
    "H": (
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##########",
        "##########",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
    ),
    "C": (
        ".########.",
        "##########",
        "##......##",
        "##........",
        "##........",
        "##........",
        "##........",
        "##......##",
        "##########",
        ".########.",
    ),
    "E": (
        "##########",
        "##########",
        "##........",
        "##........",
        "#######...",
        "#######...",
        "##........",
        "##........",
        "##########",
        "##########",
    ),
    "O": (
        ".########.",
        "##########",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##########",
        ".########.",
    ),
    "Z": (
        "##########",
        "##########",
        ".......##.",
        "......##..",
        ".....##...",
        "....##....",
        "...##.....",
        "..##......",
        "##########",
        "##########",
    ),
    "I": (
        "##########",
        "##########",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "....##....",
        "##########",
        "##########",
    ),
    "U": (
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##......##",
        "##########",
        ".########.",
    ),
    "V": (
        "##......##",
        "##......##",
        ".##....##.",
        ".##....##.",
        "..##..##..",
        "..##..##..",
        "...####...",
        "...####...",
        "....##....",
        "....##....",
    ),
    "P": (
        "########..",
        "#########.",
        "##.....##.",
        "##.....##.",
        "#########.",
        "########..",
        "##........",
        "##........",
        "##........",
        "##........",
    ),
}

DEFAULT_LETTERS = ["T", "L", "X", "H"]
# Upscaled 2x by default: at 10x10 the 50 random bits of a half-noise probe pull T into a
# mixture state in ~2% of probes; at 20x20 the same relative noise averages out (T came
# back exactly in 3000/3000 half-noise probes, async and sync).
DEFAULT_SIZE = 20
DEFAULT_DIGITS = [0, 1, 4]

_PACKAGED_MNIST = Path(__file__).resolve().parent / "mnist"


def glyph(letter: str, size: int = GLYPH_SIZE) -> np.ndarray:
    """The (size, size) {0,1} float32 bitmap of `letter`, nearest-neighbour scaled
    (multiples of 10 keep every stroke the same width)."""
    if letter not in GLYPHS:
        raise UserError(f"unknown letter '{letter}' in data.patterns; available: {', '.join(sorted(GLYPHS))}")
    if size < GLYPH_SIZE:
        # Shrinking would drop whole strokes of the 10x10 drawings.
        raise UserError(f"data.size={size} is smaller than the glyphs ({GLYPH_SIZE}); use data.size>={GLYPH_SIZE}")
    base = np.array([[c == "#" for c in row] for row in GLYPHS[letter]], dtype=np.float32)
    idx = np.arange(size) * GLYPH_SIZE // size
    return base[np.ix_(idx, idx)]


def _pattern_dataset(name: str, images: np.ndarray, names: list[str]) -> Dataset:
    p, h, w = images.shape
    x = images.reshape(p, h * w).astype(np.float32)
    y = np.arange(p, dtype=np.int32)
    return Dataset(
        name=name,
        train=Split(x, y),
        val=None,
        test=Split(x.copy(), y.copy()),
        num_classes=p,
        meta={"image_shape": (h, w), "names": names},
    )


def _check_unique(what: str, items: list) -> None:
    if not items:
        raise UserError(f"data.{what} is empty; list at least one entry")
    dupes = sorted({str(i) for i in items if items.count(i) > 1})
    if dupes:
        raise UserError(f"data.{what} lists {', '.join(dupes)} more than once; storing a pattern twice only biases W")


@dataclass
class PatternsConfig(DataConfig):
    """Config of the `letters` dataset."""

    name: str = "letters"
    val_size: int = 0  # ignored: pattern datasets have no validation split
    patterns: list[str] = field(default_factory=lambda: list(DEFAULT_LETTERS))
    size: int = DEFAULT_SIZE  # glyph side in pixels (>= 10), nearest-neighbour upscaled


@register_dataset("letters", schema=PatternsConfig)
def load_letters(cfg: PatternsConfig) -> Dataset:
    """Hand-drawn letter glyphs (T, L, X, H, ...; 20x20 by default) as {0,1} patterns for Hopfield nets."""
    letters = [str(x) for x in cfg.patterns]
    _check_unique("patterns", letters)
    images = np.stack([glyph(c, int(cfg.size)) for c in letters])
    return _pattern_dataset("letters", images, letters)


# --------------------------------------------------------------------------- MNIST digits


def _mnist_test_set(root: str | None) -> tuple[np.ndarray, np.ndarray]:
    # Read the files directly rather than through experiments.data.mnist: only the
    # 10k test images are needed and this keeps the two datasets independent.
    base = Path(root).expanduser() if root else _PACKAGED_MNIST
    img, lab = base / "t10k-images-idx3-ubyte.gz", base / "t10k-labels-idx1-ubyte.gz"
    missing = [str(p) for p in (img, lab) if not p.is_file()]
    if missing:
        raise UserError(f"MNIST file(s) not found: {', '.join(missing)}; point data.root at the MNIST directory")
    images, labels = read_idx_gz_cached(img), read_idx_gz_cached(lab)  # the checked IDX reader
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{img} and {lab} are not MNIST test images and labels (shapes {images.shape}, "
                        f"{labels.shape}); point data.root at the MNIST directory")
    return images, labels


def digit_prototype(images: np.ndarray, labels: np.ndarray, digit: int, crop: int = 4, factor: int = 2) -> np.ndarray:
    """One binary prototype of `digit`: the real test image closest (L2) to its class mean,
    with `crop` border pixels removed, `factor`x`factor` mean-pooled, thresholded at 0.5.

    A medoid rather than the thresholded class mean: the mean is a blur whose threshold
    gives thin, atypical shapes, while the medoid is real handwriting and deterministic.
    """
    x = images[labels == digit].astype(np.float32) / 255.0
    medoid = x[np.argmin(((x - x.mean(axis=0)) ** 2).sum(axis=(1, 2)))]
    if crop:
        medoid = medoid[crop:-crop, crop:-crop]
    h, w = medoid.shape
    pooled = medoid.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return (pooled >= 0.5).astype(np.float32)


@dataclass
class BinaryDigitsConfig(DataConfig):
    """Config of the `binary_digits` dataset.

    Defaults give 10x10 patterns: MNIST digits sit in a central 20x20 box, so cropping the
    4-pixel border keeps >90% of the ink and doubles the fraction of "on" pixels. That
    matters: Hebbian storage fails for strongly biased patterns, and at the uncropped
    14x14 (about 12% on) no three digits are even fixed points, while after the crop
    (about 22% on) 69 of the 120 triples are. [0, 1, 4] is one of the best-recalled
    triples (about 90% exact recall from a half-noise probe, 100% at 10% bit noise).
    """

    name: str = "binary_digits"
    val_size: int = 0  # ignored: pattern datasets have no validation split
    digits: list[int] = field(default_factory=lambda: list(DEFAULT_DIGITS))
    crop: int = 4  # border pixels removed from each 28x28 side before pooling
    downsample: int = 2  # mean-pool factor applied after the crop


@register_dataset("binary_digits", schema=BinaryDigitsConfig)
def load_binary_digits(cfg: BinaryDigitsConfig) -> Dataset:
    """One binarised MNIST prototype per chosen digit (10x10 by default) as {0,1} patterns."""
    digits = [int(d) for d in cfg.digits]
    _check_unique("digits", digits)
    bad = [d for d in digits if not 0 <= d <= 9]
    if bad:
        raise UserError(f"data.digits must be in 0..9; got {bad}")
    crop, factor = int(cfg.crop), int(cfg.downsample)
    side = 28 - 2 * crop
    if not 0 <= crop < 14:
        raise UserError(f"data.crop={crop} must be in 0..13")
    if factor < 1 or side % factor:
        raise UserError(f"data.downsample={factor} must divide the cropped side {side}; choose a divisor of {side}")
    images, labels = _mnist_test_set(cfg.root)
    protos = np.stack([digit_prototype(images, labels, d, crop, factor) for d in digits])
    return _pattern_dataset("binary_digits", protos, [str(d) for d in digits])


# --------------------------------------------------------------------------- pattern files


@dataclass
class PatternFileConfig(DataConfig):
    """Config of the `pattern_file` dataset."""

    name: str = "pattern_file"
    val_size: int = 0  # ignored: pattern datasets have no validation split
    path: str = ""  # .npy (P, N) or (P, H, W); or text: one pattern per line, values 0/1 or -1/1
    shape: Optional[list[int]] = None  # (H, W) of each pattern for pictures; default: most square


def read_pattern_file(path: Path) -> np.ndarray:
    """(P, ...) float array of a .npy file, or of a text file with one pattern per line
    (values separated by spaces or commas; a line of only 0/1 characters also works;
    blank lines and lines starting with # are skipped)."""
    if not path.is_file():
        raise UserError(f"pattern file {path} not found; set data.path to a .npy or text file of patterns")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise UserError(f"{path} is not a numeric .npy array ({err}); save the patterns with numpy.save") from None
        if arr.ndim < 2 or arr.shape[0] < 1:
            raise UserError(f"{path} holds an array of shape {arr.shape}; patterns need shape (P, N) or (P, H, W)")
        return arr.astype(np.float32)
    rows, lengths = [], {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.replace(",", " ").split()
        if len(tokens) == 1 and set(tokens[0]) <= {"0", "1"}:
            tokens = list(tokens[0])
        try:
            rows.append([float(t) for t in tokens])
        except ValueError:
            raise UserError(f"{path}:{i}: '{line[:40]}' is not a row of numbers; write 0/1 (or -1/1) values") from None
        lengths.setdefault(len(tokens), i)
    if not rows:
        raise UserError(f"{path} holds no patterns; write one pattern per line")
    if len(lengths) > 1:
        sizes = ", ".join(f"{n} (first at line {line})" for n, line in sorted(lengths.items(), key=lambda t: t[1]))
        raise UserError(f"patterns in {path} have different sizes: {sizes}; every pattern needs the same number of units")
    return np.asarray(rows, np.float32)


def to_binary(x: np.ndarray, source: str) -> np.ndarray:
    """0/1 patterns as they are, -1/1 patterns mapped to 0/1; anything else is an error."""
    values = set(np.unique(x).tolist())
    if values <= {0.0, 1.0}:
        return x.astype(np.float32)
    if values <= {-1.0, 1.0}:
        return ((x + 1) / 2).astype(np.float32)
    bad = sorted(values - {0.0, 1.0, -1.0})[:5]
    raise UserError(f"{source} holds values {bad} besides 0/1 (or -1/1); Hopfield patterns must be binary")


@register_dataset("pattern_file", schema=PatternFileConfig)
def load_pattern_file(cfg: PatternFileConfig) -> Dataset:
    """Binary patterns from a file (.npy, or text with one 0/1 or -1/1 pattern per line)."""
    from experiments.data.random_patterns import check_fits, square_shape

    if not cfg.path:
        raise UserError("data=pattern_file needs data.path=FILE (a .npy array or one pattern per line)")
    path = Path(str(cfg.path)).expanduser()
    x = to_binary(read_pattern_file(path), str(path))
    p, n = x.shape[0], int(np.prod(x.shape[1:]))
    check_fits(p, n)
    if cfg.shape:
        h, w = (int(v) for v in cfg.shape)
        if h * w != n:
            raise UserError(f"data.shape={list(cfg.shape)} holds {h * w} units but the patterns have {n}; "
                            f"choose H x W = {n}")
    else:
        h, w = x.shape[1:] if x.ndim == 3 else square_shape(n)
    _check_no_duplicates(x.reshape(p, n), path)
    return _pattern_dataset("pattern_file", x.reshape(p, h, w), [str(i) for i in range(p)])


def _check_no_duplicates(x: np.ndarray, path: Path) -> None:
    _, first, counts = np.unique(x, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"{path} repeats pattern {int(first[counts > 1][0])}; storing a pattern twice only biases W")
