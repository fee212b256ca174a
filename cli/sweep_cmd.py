"""`nnrun sweep`: the command's glue. The sweep itself is experiments/sweep/driver.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def _show(renderable: Any) -> None:
    from cli import commands  # looked up at call time: tests swap the console

    commands.console.print(renderable, markup=False, highlight=False, soft_wrap=True)


def sweep(conf: Optional[str], overrides: list[str], jobs: int = 1, dry_run: bool = False,
          resume: Optional[Path] = None, vectorize: Optional[bool] = None, force_vectorize: bool = False) -> int:
    from experiments.sweep import driver

    driver.show = _show
    return driver.sweep(conf, overrides, jobs=jobs, dry_run=dry_run, resume=resume,
                        vectorize=vectorize, force_vectorize=force_vectorize)
