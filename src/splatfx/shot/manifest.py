"""``manifest.json``: the record of every stage run, and whether a stage is up to date.

Each run records its stage, status (``running`` → ``ok`` or ``failed``), start and end
times, the sha256 and size of its inputs and outputs, its config, seed, package
versions and the figures the stage reported. A stage is up to date when its most
recent run finished ``ok`` with the same input hashes, config and seed, and its outputs
are still there unchanged. A failed run, or one still marked ``running`` (the process
was killed), is never up to date.

Files are hashed in 1 MiB chunks; hashes are cached by (path, size, mtime_ns) in
``.splatfx/hashes.json`` so that big plates are not re-read on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splatfx.core.atomic import write_text_atomic
from splatfx.core.errors import InputError

PathLike = str | os.PathLike[str]

MANIFEST_FORMAT = "splatfx-manifest"
MANIFEST_VERSION = 1
CHUNK_BYTES = 1 << 20

# --- hashing --------------------------------------------------------------------------------------


class HashCache:
    """sha256 of files keyed by (absolute path, size, mtime_ns), stored as JSON."""

    def __init__(self, path: PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
            except (ValueError, AttributeError):
                self.entries = {}  # a damaged cache only costs a rehash

    def sha256(self, path: PathLike) -> tuple[str, int]:
        """The file's sha256 (hex) and size, read only if the file changed since cached."""
        key = os.path.abspath(path)
        st = os.stat(key)
        cached = self.entries.get(key)
        if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            return cached[2], st.st_size
        digest = hash_file(key)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.changed = True
        return digest, st.st_size

    def save(self) -> None:
        """Write the cache (atomically) if anything was added."""
        if self.path is not None and self.changed:
            write_text_atomic(self.path, json.dumps(self.entries, indent=0, sort_keys=True))
            self.changed = False


def hash_file(path: PathLike) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(paths: PathLike | Sequence[PathLike], cache: HashCache) -> dict:
    """``{"sha256", "size", "files"}`` of a file, a folder (every non-hidden file in it) or a
    list of files and folders. Several files get one digest over each file's name (relative
    to the folder given, so moving a folder keeps its digest) and hash, in sorted order."""
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_file():
        digest, size = cache.sha256(paths)
        return {"sha256": digest, "size": size, "files": 1}
    total = hashlib.sha256()
    size = count = 0
    for name, path in _collect(paths):
        digest, n = cache.sha256(path)
        total.update(f"{name}\0{digest}\n".encode())
        size += n
        count += 1
    return {"sha256": total.hexdigest(), "size": size, "files": count}


def _collect(paths: PathLike | Sequence[PathLike]) -> list[tuple[str, Path]]:
    """(name, path) of every file under ``paths``, sorted; InputError if one is missing."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[tuple[str, Path]] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            found.append((p.name, p))
        elif p.is_dir():
            found.extend((f.relative_to(p).as_posix(), f) for f in _walk(p))
        else:
            raise InputError(p, "does not exist")
    return sorted(found)


def _walk(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, skipping hidden names (temporary files, caches)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name


# --- records --------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One run of one stage, as stored in manifest.json."""

    id: str
    stage: str
    status: str  # "running", "ok" or "failed"
    started: str
    finished: str | None = None
    seconds: float | None = None
    inputs: dict[str, dict] = field(default_factory=dict)
    config: Any = None
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    upstream: dict[str, str] = field(default_factory=dict)  # stage -> id of the run whose outputs it read

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class Manifest:
    """The list of runs in a shot's manifest.json (missing file: no runs yet)."""

    def __init__(self, path: PathLike, runs: list[RunRecord] | None = None) -> None:
        self.path = Path(path)
        self.runs = runs or []

    @classmethod
    def load(cls, path: PathLike) -> Manifest:
        p = Path(path)
        if not p.exists():
            return cls(p)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {MANIFEST_FORMAT!r}")
            runs = [RunRecord.from_json(r) for r in data["runs"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(p, f"is not a readable splatfx manifest ({exc}); move it aside to "
                                "start a new history") from None
        return cls(p, runs)

    def save(self) -> None:
        """Write manifest.json atomically: readers see the old file or the whole new one."""
        data = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                "runs": [r.to_json() for r in self.runs]}
        write_text_atomic(self.path, json.dumps(data, indent=2, default=_jsonable) + "\n")

    def last(self, stage: str) -> RunRecord | None:
        """The most recent run of ``stage`` (whatever its status)."""
        for record in reversed(self.runs):
            if record.stage == stage:
                return record
        return None

    def put(self, record: RunRecord) -> None:
        """Add ``record``, or replace the earlier version of it (same id)."""
        for i, r in enumerate(self.runs):
            if r.id == record.id:
                self.runs[i] = record
                return
        self.runs.append(record)


def record_run(path: PathLike, record: RunRecord) -> None:
    """Add or update one run in the manifest at ``path``, under a lock on its folder so
    that two stages finishing together do not lose each other's record."""
    with _folder_lock(Path(path).parent):
        manifest = Manifest.load(path)
        manifest.put(record)
        manifest.save()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX flock; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # Windows: single-user runs only
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _jsonable(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths in figures; anything else as text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --- up to date -----------------------------------------------------------------------------------

def stale_reason(last: RunRecord | None, inputs: Mapping[str, dict], config: Any, seed: int | None,
                 current_outputs: Callable[[], Mapping[str, dict | None]]) -> str | None:
    """Why the stage must run again, or None when ``last`` is an up-to-date run.

    ``current_outputs()`` maps each output to its fingerprint now (None: missing); it is
    called only when everything cheaper already matches.
    """
    if last is None:
        return "never run"
    if last.status != "ok":
        return f"the last run {'did not finish' if last.status == 'running' else 'failed'}"
    changed = sorted(k for k in set(inputs) | set(last.inputs)
                     if _digest(inputs.get(k)) != _digest(last.inputs.get(k)))
    if changed:
        return f"inputs changed: {', '.join(changed)}"
    if _canonical(config) != _canonical(last.config):
        keys = _changed_keys(_canonical(last.config), _canonical(config))
        return f"config changed: {', '.join(keys)}"
    if seed != last.seed:
        return f"seed changed: {last.seed} → {seed}"
    outputs_now = current_outputs()
    if set(outputs_now) != set(last.outputs):
        return "the stage's outputs are not the ones last recorded"
    for name, recorded in last.outputs.items():
        now = outputs_now[name]
        if now is None:
            return f"output missing: {name}"
        if _digest(now) != _digest(recorded):
            return f"output changed since: {name}"
    return None


def _digest(fp: Mapping[str, Any] | None) -> tuple | None:
    return None if fp is None else (fp.get("sha256"), fp.get("size"))


def _canonical(value: Any) -> Any:
    """JSON-equal form (tuples become lists) so stored and live configs compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=_jsonable))


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (nested) config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for k in sorted(set(old) | set(new)):
            keys += _changed_keys(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
        return keys
    return [] if old == new else [prefix or "config"]
