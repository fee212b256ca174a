"""Real time series for forecasting: monthly sunspots (1749-2009), airline passengers
(1949-1960), or any CSV of values (`data=timeseries_csv data.path=FILE`).

Each example is a window of `window` past values; its target is the next `horizon`
values (a direct multi-step forecast: the model outputs all `horizon` steps at once, so
no forecast is fed back and errors do not compound). The splits are cut in time: the
last `test_size` steps are the held-out tail, the `val_size` steps before it validate,
and training windows have every target before the validation block (a window's *inputs*
may reach back into an earlier split: the past is known when forecasting). Values are
standardised with the training part's mean and standard deviation (after `transform:
log`, if set), so RMSE is in units of that spread (multiply by `meta["std"]` for the
series' own units; the forecast figure shows the series' units in any case).

The packaged CSVs (experiments/data/timeseries/, provenance in its README) are used
unless `data.root=DIR` holds a file of the same name, or `data.path=FILE` names one.
A CSV is read strictly: a missing value, a non-numeric cell or too few rows is a one-line
error naming the file and the row.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

PACKAGED = Path(__file__).resolve().parent / "timeseries"
TRANSFORMS = ("none", "log")


@dataclass
class TimeSeriesConfig(DataConfig):
    name: str = "timeseries_csv"
    path: Optional[str] = None  # a CSV file; for sunspots and airline null = data.root or the packaged copy
    column: Optional[str] = None  # the column of values (its header name, or 0-based index); null = the last
    header: bool = True  # the first line names the columns
    window: int = 40  # past values per example
    horizon: int = 1  # values forecast per example (direct multi-step)
    val_size: int = 0  # time steps before the test tail used for validation (0 = none)
    test_size: int = 120  # time steps of the held-out tail
    transform: str = "none"  # none | log (a multiplicative season and trend become additive)

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise UserError(f"bad value for 'data.transform': '{self.transform}'; allowed values: {', '.join(TRANSFORMS)}")
        for key in ("window", "horizon", "test_size"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'data.{key}': {getattr(self, key)}; it must be >= 1")
        if self.val_size < 0:
            raise UserError(f"bad value for 'data.val_size': {self.val_size}; it must be >= 0")
        for key in ("val_size", "test_size"):
            size = getattr(self, key)
            if 0 < size < self.horizon:
                raise UserError(f"data.{key}={size} is shorter than data.horizon={self.horizon}: "
                                f"no forecast fits in it; make data.{key} >= data.horizon")


def read_series(path: Path, column: Optional[str] = None, header: bool = True) -> tuple[np.ndarray, list[str]]:
    """(values as float64, the first column as labels) from a CSV, strictly checked."""
    if not path.is_file():
        raise UserError(f"time-series file {path} does not exist; set data.path to a CSV file of values")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read time-series file {path}: {err}; pass a UTF-8 CSV file as data.path") from None
    while rows and not any(cell.strip() for cell in rows[-1]):  # trailing blank lines
        rows.pop()
    names = [c.strip() for c in rows[0]] if header and rows else []
    first = 1 if header else 0
    col = _column_index(path, names, column, rows[first] if len(rows) > first else [])
    label = names[col] if names else f"column {col}"
    values, labels = [], []
    for line, row in enumerate(rows[first:], start=first + 1):
        row_no = line - first  # data rows counted from 1 (the header is not a row)
        where = f"{path}, row {row_no} (line {line})"
        cell = row[col].strip() if col < len(row) else ""
        if not cell:
            raise UserError(f"{where}: missing value in column '{label}'; fill it in or delete the row")
        try:
            value = float(cell)
        except ValueError:
            raise UserError(f"{where}: '{cell}' in column '{label}' is not a number; "
                            "correct the cell (plain decimal numbers only)") from None
        if not math.isfinite(value):
            raise UserError(f"{where}: '{cell}' in column '{label}' is not a finite number; "
                            "replace it with a measured value or delete the row")
        values.append(value)
        labels.append(row[0].strip() if row else "")
    return np.asarray(values, np.float64), labels


def _column_index(path: Path, names: list[str], column: Optional[str], first_row: list[str]) -> int:
    width = len(names) or len(first_row)
    if width == 0:
        raise UserError(f"time-series file {path} has no rows; pass a CSV file with one value per row")
    if column is None:
        return width - 1
    if str(column) in names:
        return names.index(str(column))
    if str(column).isdigit() and int(column) < width:
        return int(column)
    raise UserError(f"{path} has no column '{column}'; set data.column to one of: "
                    f"{', '.join(names) if names else ', '.join(map(str, range(width)))}")


def forecast_splits(values: np.ndarray, cfg: TimeSeriesConfig, source: str) -> dict:
    """The example origins of each split: origin t = the index of an example's first target."""
    n, window, horizon = len(values), cfg.window, cfg.horizon
    if n < window + horizon:
        raise UserError(f"{source} has {n} rows; one window needs at least data.window + data.horizon = "
                        f"{window + horizon}; use a longer series or a smaller data.window")
    test_from = n - cfg.test_size
    val_from = test_from - cfg.val_size
    train_end = val_from - horizon  # the last training origin: its targets end before validation
    if train_end < window:
        raise UserError(f"{source} has {n} rows: after the test tail ({cfg.test_size}) and validation "
                        f"({cfg.val_size}) no training window of {window} + {horizon} is left; "
                        "lower data.test_size, data.val_size or data.window")
    return {"train": np.arange(window, train_end + 1), "val": np.arange(val_from, test_from - horizon + 1),
            "test": np.arange(test_from, n - horizon + 1), "train_end": val_from}


def windows(standard: np.ndarray, origins: np.ndarray, window: int, horizon: int) -> Split:
    """x (examples, window, 1) and y (examples, horizon): materialised (a few thousand floats)."""
    x = standard[origins[:, None] - window + np.arange(window)][..., None]
    y = standard[origins[:, None] + np.arange(horizon)]
    return Split(x.astype(np.float32), y.astype(np.float32))


def load_series(values: np.ndarray, labels: list[str], cfg: TimeSeriesConfig, source: str) -> Dataset:
    if cfg.transform == "log":
        if values.min() <= 0:
            row = int(np.argmin(values)) + 1
            raise UserError(f"{source}, row {row}: data.transform=log needs values > 0, found {values.min():g}; "
                            "use data.transform=none")
        values = np.log(values)
    parts = forecast_splits(values, cfg, source)
    train_part = values[:parts["train_end"]]
    mean, std = float(train_part.mean()), float(train_part.std())
    if not std > 0:
        raise UserError(f"{source}: the training part of the series is constant; a forecaster has nothing to learn")
    standard = (values - mean) / std
    split = lambda origins: windows(standard, origins, cfg.window, cfg.horizon)  # noqa: E731
    val = split(parts["val"]) if cfg.val_size else None
    return Dataset(cfg.name, split(parts["train"]), val, split(parts["test"]), num_classes=None,
                   meta={"mean": mean, "std": std, "labels": labels, "series": standard.astype(np.float32),
                         "test_origins": parts["test"], "window": cfg.window, "horizon": cfg.horizon,
                         "source": source, "transform": cfg.transform})


def _file(cfg: TimeSeriesConfig, packaged_name: str) -> Path:
    if cfg.path:
        return Path(str(cfg.path)).expanduser()
    if cfg.root:
        return Path(str(cfg.root)).expanduser() / packaged_name
    return PACKAGED / packaged_name


def _load(cfg: TimeSeriesConfig, packaged_name: Optional[str]) -> Dataset:
    if packaged_name is None and not cfg.path:
        raise UserError("data=timeseries_csv needs a file: set data.path=FILE (a CSV with one value per row)")
    path = _file(cfg, packaged_name or "")
    values, labels = read_series(path, cfg.column, cfg.header)
    return load_series(values, labels, cfg, str(path))


@dataclass
class SunspotsConfig(TimeSeriesConfig):
    name: str = "sunspots"
    val_size: int = 264  # 22 years: two solar cycles
    test_size: int = 264


@dataclass
class AirlineConfig(TimeSeriesConfig):
    name: str = "airline"
    val_size: int = 12
    test_size: int = 24


@register_dataset("sunspots", schema=SunspotsConfig)
def load_sunspots(cfg: SunspotsConfig) -> Dataset:
    """monthly mean sunspot numbers 1749-2009 (3126 steps, packaged): windows -> the next value(s)"""
    return _load(cfg, "sunspots_monthly.csv")


@register_dataset("airline", schema=AirlineConfig)
def load_airline(cfg: AirlineConfig) -> Dataset:
    """airline passengers 1949-1960, monthly (144 steps, packaged): windows -> the next value(s)"""
    return _load(cfg, "airline_passengers.csv")


@register_dataset("timeseries_csv", schema=TimeSeriesConfig)
def load_csv(cfg: TimeSeriesConfig) -> Dataset:
    """any CSV of values (data.path): windows -> the next value(s), a held-out tail"""
    return _load(cfg, None)
