"""Experiment configuration: YAML files, ``--set key.sub=value`` overrides, the resolved config saved with each run."""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from demoe.errors import DemoeError
from demoe.paths import shipped_dir


class ConfigError(DemoeError):
    pass


def find_experiment_file(value: Path | str) -> Path:
    """An experiment file given as a path, or by the name of a shipped one (``tiny_synth``,
    ``tiny_synth.yaml`` or ``experiments/tiny_synth.yaml`` from any folder)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    shipped = shipped_dir("experiments")
    for candidate in (shipped / path.name, shipped / f"{path.name}.yaml"):
        if candidate.is_file() and path.parent in (Path("."), Path("experiments")):
            return candidate
    known = sorted(p.stem for p in shipped.glob("*.yaml"))
    raise ConfigError(
        f"{value}: no such file, nor a shipped experiment of that name (shipped: {', '.join(known) or 'none'})"
    )


class ManifestCheck:
    """All the problems of one manifest (a zoo entry, a benchmark manifest, an experiment file), reported
    together: each independent check runs in ``with check.item():`` (or calls ``add``), and ``done``
    raises them as one line naming the file. The one way every manifest kind is validated."""

    def __init__(self, source: Path | str, error: type[DemoeError]):
        self.source, self.error, self.problems = str(source), error, []

    def add(self, message: str) -> None:
        message = message.removeprefix(f"{self.source}: ")
        if message not in self.problems:
            self.problems.append(message)

    @contextmanager
    def item(self) -> Iterator[None]:
        try:
            yield
        except DemoeError as e:
            self.add(str(e))

    def done(self) -> None:
        if self.problems:
            raise self.error(f"{self.source}: " + "; ".join(self.problems))


def read_yaml(path: Path, error: type[Exception]):
    """The YAML document of a manifest (zoo, benchmark or experiment file); a file that cannot be read,
    is not UTF-8 or is not YAML raises ``error`` with one line naming the file and the first problem."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror})") from None


def load_config(path: Path) -> dict:
    path = find_experiment_file(path)
    data = read_yaml(path, ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option names")
    return data


def apply_overrides(config: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of ``config`` with each ``a.b.c=value`` applied (values parsed as YAML scalars)."""
    out = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
