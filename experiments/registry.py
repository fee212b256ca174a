"""Name -> builder registries, so that a new model or dataset is one module plus one YAML.

Modules register themselves with a decorator; `discover()` imports every module of a
package so that registration happens without a central list to edit.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar

from experiments.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries with a helpful error for unknown names."""

    def __init__(self, kind: str, package: str, aliases: dict[str, str] | None = None):
        self.kind, self.package = kind, package
        self.aliases = dict(aliases or {})  # old names still found (configs saved by earlier versions)
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def unregister(self, name: str) -> None:
        """Forget an entry (a plugin or test that registered it is done with it)."""
        self._entries.pop(name, None)

    def discover(self) -> None:
        """Import every module in the package so that their decorators run."""
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    def get(self, name: str) -> T:
        self.discover()
        name = self.canonical(name)
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}"
            )
        return self._entries[name]

    def items(self) -> list[tuple[str, Any]]:
        self.discover()
        return sorted(self._entries.items())


# ----------------------------------------------------------------------------- plugins
# User modules that register models, datasets, objectives, optimizers, schedules or
# trainers, loaded before any config is composed: installed packages through the entry-point
# group `nnrun.plugins`, and the modules or .py files a config's `plugins` list (or
# `--plugin`) names. Importing a module is what registers it (its decorators run).

PLUGIN_GROUP = "nnrun.plugins"
_loaded: dict[str, Any] = {}  # what was loaded, by its resolved spec: each once per process
_entry_points_loaded = False


def is_plugin_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or (os.sep in spec)


def resolve_plugin(spec: str, base: Optional[Path] = None) -> str:
    """A plugin spec as it is recorded in a run's config: a file as an absolute path
    (relative ones are relative to `base`, default the working directory), a module as is."""
    spec = str(spec).strip()
    if is_plugin_file(spec):
        path = Path(spec).expanduser()
        return str(path if path.is_absolute() else ((base or Path.cwd()) / path).resolve())
    return spec


def load_plugins(specs: Iterable[str] = ()) -> None:
    """The installed entry points (once), then each spec: a .py file or a module name."""
    load_entry_points()
    for spec in specs:
        load_plugin(spec)


def load_plugin(spec: str) -> Any:
    key = resolve_plugin(spec)
    if key in _loaded:
        return _loaded[key]
    if not key or key.startswith("-"):
        raise UserError(f"bad plugin '{spec}'; give a Python file (my_models.py) or an importable module name")
    if is_plugin_file(key):
        path = Path(key)
        if not path.is_file():
            raise UserError(f"plugin file {path} does not exist; check the path in plugins=[...] or --plugin "
                            "(relative paths are relative to the working directory)")
        same = _imported_from(path)
        if same is not None:  # imported by name already (a launcher's worker unpickling its classes)
            _loaded[key] = same
            return same
        name = _module_name(path)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))  # its sibling modules import like in a script
        try:
            _guarded(spec, lambda: module_spec.loader.exec_module(module))
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            if sys.path and sys.path[0] == str(path.parent):
                sys.path.pop(0)
        if name == path.stem:
            _share_path(path.parent)
    else:
        cwd = str(Path.cwd())
        added = cwd not in sys.path
        if added:  # a module in the working directory imports as `python -m` would find it
            sys.path.append(cwd)
        try:
            module = _guarded(spec, lambda: importlib.import_module(key))
        finally:
            if added and cwd in sys.path:
                sys.path.remove(cwd)
        if added and Path(getattr(module, "__file__", "") or "/").resolve().is_relative_to(Path(cwd).resolve()):
            _share_path(Path(cwd))
    _loaded[key] = module
    return module


def _imported_from(path: Path) -> Any:
    """The module already imported from the file `path`, if any."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).name == path.name:
            try:
                if Path(file).resolve() == path.resolve():
                    return module
            except OSError:
                continue
    return None


def _module_name(path: Path) -> str:
    """A file plugin's module name: its stem, when that names no other module (so that the
    classes it defines pickle by a name a launcher's worker process can import again, see
    _share_path); else a unique private name."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        try:
            taken = importlib.util.find_spec(stem) is not None
        except (ImportError, ValueError):
            taken = True
        if not taken:
            return stem
    return f"nnrun_plugin_{stem}_{zlib.crc32(str(path).encode()):08x}"


def _share_path(folder: Path) -> None:
    """Put a plugin's folder on $PYTHONPATH for the processes this one starts: Hydra's Ray
    and submitit launchers pickle the ConfigStore (with the plugin's schema classes) to their
    workers, which unpickle it before nnrun's code runs there."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(folder) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([*parts, str(folder)])


def load_entry_points() -> None:
    """Every `nnrun.plugins` entry point of the installed packages: a module (imported) or
    a function (called with no arguments)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        where = f"entry point '{ep.name} = {ep.value}' of package {getattr(ep.dist, 'name', '?')}"
        target = _guarded(where, ep.load)
        if callable(target) and not isinstance(target, type(sys)):
            _guarded(where, target)


def _guarded(what: str, fn: Callable[[], T]) -> T:
    """Run a plugin's code; its failures become one line naming the plugin."""
    try:
        return fn()
    except UserError as err:
        raise UserError(f"plugin {what}: {err}") from err
    except ModuleNotFoundError as err:
        raise UserError(f"plugin {what} could not be imported: {err}; install what it needs, or check the name "
                        "(a module must be importable from the working directory or the environment)") from err
    except Exception as err:  # noqa: BLE001 - the plugin's own bug, not nnrun's
        first = (str(err).strip().splitlines() or [""])[0]
        raise UserError(f"plugin {what} failed while loading: {type(err).__name__}: {first} "
                        "(run with --debug for the traceback)") from err
