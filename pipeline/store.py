"""Parquet stores for the `annotate` command: input parts, output parts, the manifest and the lock.

Exactly-once rule: a part's output files (one per table) are written under hidden temporary names, renamed
to their final names when all are complete, and only then recorded in `_manifest.json`
(itself replaced atomically). A re-run skips recorded parts and redoes any other, replacing
whatever a killed run left under final names; stale temporary files are removed first.
"""

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from albert_srl.pipeline.annotation import (
    EMPTY,
    OK,
    TABLES,
    AnnotateInputError,
    AnnotateSettings,
    annotate_table,
    output_schemas,
    pipeline_for,
)

MANIFEST = "_manifest.json"
LOCK = "_annotate.lock"
TMP_MARK = ".tmp-"
ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class Part:
    """One input Parquet file; `name` (its path below the input root) names its output files."""

    path: str
    name: str
    size: int
    mtime_ns: int

    def output_path(self, output: Path, table: str) -> Path:
        name = self.name if self.name.endswith(".parquet") else self.name + ".parquet"
        return output / table / name

    def fingerprint(self) -> Dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns}


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def discover_parts(source: Path) -> List[Part]:
    """A Parquet file, or every file below a folder (hive-partitioned or not) whose path has no
    component starting with `.` or `_` (Spark's `_SUCCESS`, `.crc` files), in sorted order.
    Output files mirror these paths, so hive partition folders (year=2024/) carry through."""
    source = Path(source)
    if source.is_file():
        files, root = [source], source.parent
    elif source.is_dir():
        root = source
        files = sorted(
            p for p in source.rglob("*") if p.is_file() and not any(_hidden(c) for c in p.relative_to(source).parts)
        )
    else:
        raise AnnotateInputError(f"The input {source} does not exist; give a Parquet file or a folder of Parquet files")
    if not files:
        raise AnnotateInputError(f"No Parquet files under {source}")
    parts, outputs = [], {}
    for path in files:
        rel = path.relative_to(root)
        stat = path.stat()
        part = Part(str(path), rel.as_posix(), stat.st_size, stat.st_mtime_ns)
        target = part.output_path(Path("."), "t")
        if target in outputs:
            raise AnnotateInputError(
                f"{outputs[target]} and {path} would write the same output file; rename one of them"
            )
        outputs[target] = path
        parts.append(part)
    return parts


@dataclass
class PartResult:
    name: str
    rows: int = 0
    ok: int = 0
    empty: int = 0
    failed_rows: int = 0
    tokens: int = 0
    predicates: int = 0
    arguments: int = 0
    seconds: float = 0.0
    # set when the part as a whole could not be annotated (an unreadable file); nothing was written then
    error: Optional[str] = None
    fingerprint: Dict[str, int] = field(default_factory=dict)
    # table -> the complete temporary file, until `publish_part` renames it
    temporaries: Dict[str, str] = field(default_factory=dict)


def annotate_part(
    part: Part,
    settings: AnnotateSettings,
    output: Path,
    read_rows: int = 1024,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> PartResult:
    """Annotate one input part into complete temporary files (one per table), streaming `read_rows` rows at a
    time. Runs in the driver or on a Dask worker; never raises for bad data (the result says what
    failed). Only the process holding the output lock publishes them (`publish_part`), so a task
    that outlives its run can never put files under final names."""
    started = time.perf_counter()
    result = PartResult(part.name, fingerprint=part.fingerprint())
    token = uuid.uuid4().hex[:12]
    finals = {t: part.output_path(output, t) for t in TABLES}
    temps = {t: p.with_name(f".{p.name}{TMP_MARK}{token}") for t, p in finals.items()}
    writers: Dict[str, pq.ParquetWriter] = {}
    try:
        loaded = pipeline_for(settings)
        source = pq.ParquetFile(part.path)
        schemas = output_schemas(source.schema_arrow, settings, loaded.provenance)
        for t in TABLES:
            temps[t].parent.mkdir(parents=True, exist_ok=True)
            writers[t] = pq.ParquetWriter(temps[t], schemas[t], compression="zstd")
        seen: Set[Any] = set()
        pending: Dict[str, List[pa.Table]] = {t: [] for t in TABLES}
        for batch in source.iter_batches(batch_size=read_rows, columns=settings.input_columns()):
            table = pa.Table.from_batches([batch])
            tables = annotate_table(
                table, settings, part=part.name, row_offset=result.rows, seen_ids=seen, schemas=schemas
            )
            for t, out in tables.items():
                pending[t].append(out)
                if sum(len(x) for x in pending[t]) >= ROW_GROUP_ROWS:
                    _flush(writers[t], pending[t])
            tokens = _count(result, tables)
            if on_batch is not None:
                on_batch(len(table), tokens)
        for t in TABLES:
            _flush(writers[t], pending[t])
            writers.pop(t).close()
        result.temporaries = {t: str(path) for t, path in temps.items()}
    except Exception as err:  # an unreadable or corrupt part: reported, the other parts go on
        result.error = f"{type(err).__name__}: {err}"
        for writer in writers.values():
            writer.close()
        for path in temps.values():
            path.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - started
    return result


def _flush(writer: pq.ParquetWriter, tables: List[pa.Table]) -> None:
    """Write buffered batches as one row group (readers prefer few large row groups)."""
    rows = [t for t in tables if len(t)]
    if rows:
        writer.write_table(pa.concat_tables(rows))
    tables.clear()


def publish_part(part: Part, result: PartResult, output: Path) -> PartResult:
    """Rename a finished part's temporary files to their final names (call with the lock held)."""
    if result.error is None:
        missing = [path for path in result.temporaries.values() if not Path(path).exists()]
        if missing or len(result.temporaries) != len(TABLES):
            result.error = (
                f"the worker's files are not visible here ({', '.join(missing) or 'none returned'}); "
                "OUTPUT must be on a filesystem all workers share"
            )
        else:
            for t in TABLES:
                os.replace(result.temporaries[t], part.output_path(output, t))
    if result.error is not None:
        unpublish(part, output)
    result.temporaries = {}
    return result


def unpublish(part: Part, output: Path) -> None:
    """Remove a part's final files (left by a run killed between renaming and recording)."""
    for t in TABLES:
        part.output_path(output, t).unlink(missing_ok=True)


def _count(result: PartResult, tables: Dict[str, pa.Table]) -> int:
    documents = tables["documents"]
    status = documents["status"].to_pylist()
    result.rows += len(documents)
    result.ok += status.count(OK)
    result.empty += status.count(EMPTY)
    result.failed_rows += len(tables["errors"])
    tokens = int(pc.sum(documents["tokens"]).as_py() or 0)
    result.tokens += tokens
    result.predicates += len(tables["predicates"])
    result.arguments += len(tables["arguments"])
    return tokens


class Manifest:
    """`OUTPUT/_manifest.json`: the settings and model of the output, and its finished parts."""

    def __init__(self, output: Path):
        self.path = Path(output) / MANIFEST
        try:
            self.data: Dict[str, Any] = json.loads(self.path.read_text("utf8")) if self.path.exists() else {}
        except (OSError, ValueError) as err:
            raise AnnotateInputError(
                f"Cannot read {self.path} ({err}); use a new output folder or --overwrite"
            ) from None

    def check_compatible(self, settings: Dict[str, Any], provenance: Dict[str, str]) -> None:
        """A resumed run must write what the finished parts were written with."""
        if not self.data:
            self.data = {
                "schema_version": provenance["schema_version"],
                "settings": settings,
                "provenance": provenance,
                "parts": {},
                "failed_parts": {},
            }
            return
        written = self.data.get("schema_version")
        if written != provenance["schema_version"]:
            raise AnnotateInputError(
                f"{self.path.parent} holds output of table schema {written}, this albert-srl writes "
                f"schema {provenance['schema_version']} (its tables differ); use a new output folder or --overwrite"
            )
        recorded = self.data.get("provenance", {})
        old = self.data.get("settings", {}), recorded.get("config_sha256"), recorded.get("weights_sha256")
        if old != (settings, provenance["config_sha256"], provenance["weights_sha256"]):
            raise AnnotateInputError(
                f"{self.path.parent} holds output written with other settings or another model "
                f"({self.data.get('settings')}, config {str(old[1])[:12]}); use a new output folder or --overwrite"
            )

    def done(self, part: Part) -> bool:
        record = self.data["parts"].get(part.name)
        if record is None:
            return False
        if record.get("fingerprint") != part.fingerprint():
            raise AnnotateInputError(
                f"The input part {part.path} changed since it was annotated into {self.path.parent}; "
                "use a new output folder or --overwrite"
            )
        return True

    def forget_missing(self, parts: List[Part]) -> None:
        """Failed parts that are no longer in the input are not failures any more."""
        names = {p.name for p in parts}
        self.data["failed_parts"] = {k: v for k, v in self.data["failed_parts"].items() if k in names}

    def record(self, result: PartResult) -> None:
        if result.error is None:
            self.data["parts"][result.name] = asdict(result)
            self.data["failed_parts"].pop(result.name, None)
        else:
            self.data["failed_parts"][result.name] = result.error
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}{TMP_MARK}{os.getpid()}")
        with open(tmp, "w", encoding="utf8") as f:
            json.dump(self.data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def lock_output(output: Path) -> FileLock:
    """Hold `OUTPUT/_annotate.lock` for the run (released by the OS if the process dies)."""
    if output.exists() and not output.is_dir():
        raise AnnotateInputError(f"The output {output} is a file; give a folder")
    output.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AnnotateInputError(
            f"Another annotate run is writing to {output} (it holds {output / LOCK}); "
            "wait for it to finish or use another output folder"
        ) from None
    return lock


def remove_stale_temporaries(output: Path) -> int:
    stale = [p for t in TABLES if (output / t).exists() for p in (output / t).rglob(f"*{TMP_MARK}*")]
    stale += list(output.glob(f".{MANIFEST}{TMP_MARK}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
