"""The engine-agnostic core of bulk annotation: an Arrow table in, five tidy Arrow tables out.

`annotate_table` is what the `annotate` command runs on every batch of every Parquet part, in this
process or on a Dask worker; `get_pipeline` keeps one loaded pipeline per process, so a worker loads
the model once, however many tasks it runs. Output tables (their columns: docs/annotate.md):

- `arguments`: one row per argument, `predicates`: one row per predicate,
- `tokens`: one row per token (POS, morphology and dependencies where the pipeline predicts them),
- `documents`: one row per input row (with its status), `errors`: rows that were not annotated.
"""

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy
import pyarrow as pa
import spacy
from spacy.language import Language
from spacy.tokens import Doc

from albert_srl.components.frames import get_frames
from albert_srl.pipeline.loading import PipelineLoadError, load_srl_pipeline

SCHEMA_VERSION = "2"  # 2: the tokens table
TABLES = ("arguments", "predicates", "tokens", "documents", "errors")
METADATA_KEY = b"albert_srl"
# Document statuses in the `documents` table.
OK, EMPTY, ERROR, DUPLICATE = "ok", "empty", "error", "duplicate_id"
RESERVED_COLUMNS = {
    "doc_id", "sent_idx", "pred_token_idx", "pred_start_char", "pred_end_char", "pred_text", "pred_lemma", "pred_sense",
    "role", "arg_start_token", "arg_end_token", "arg_start_char", "arg_end_char", "arg_text", "score", "pred_type",
    "pred_start_token", "pred_end_token", "arguments", "part", "row", "status", "chars", "tokens", "sentences",
    "predicates", "reason", "token_idx", "text", "lemma", "pos", "morph", "head", "dep", "start_char", "end_char",
}  # fmt: skip


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if os.name == "posix" else None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS. Without it glibc keeps the high-water mark of every
    batch it has seen, and a long run's peak RSS grows with the size of the store."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


class AnnotateInputError(ValueError):
    """Input the whole run cannot go on with (a missing column, an unreadable model)."""


@dataclass(frozen=True)
class AnnotateSettings:
    """Everything a worker needs to annotate a batch; small and picklable (the model is a path)."""

    model: str
    id_column: str = "id"
    text_column: str = "text"
    # Name of a list<string> column of pre-tokenized input; the text column is ignored then.
    tokens_column: Optional[str] = None
    carry: Tuple[str, ...] = ()
    batch_size: int = 32
    # and at most this many characters per batch (bounds the encoder's memory)
    batch_chars: int = 8_000
    n_process: int = 1
    gpu_id: int = -1
    max_chars: int = 2_000_000

    def input_columns(self) -> List[str]:
        source = self.tokens_column or self.text_column
        return list(dict.fromkeys([self.id_column, source, *self.carry]))

    def fingerprint(self) -> Dict[str, Any]:
        """The settings that shape the output (a resumed run must use the same ones)."""
        keep = ("id_column", "text_column", "tokens_column", "carry", "max_chars")
        return {k: v for k, v in asdict(self).items() if k in keep} | {"carry": list(self.carry)}


@dataclass
class LoadedPipeline:
    nlp: Language
    provenance: Dict[str, str] = field(default_factory=dict)


_PIPELINES: Dict[Tuple[str, int, int, bool], LoadedPipeline] = {}
# Dask workers may run tasks in several threads; one nlp (and its memory zones) serves one at a time.
_PIPELINE_LOCK = threading.RLock()


def get_pipeline(model: str, gpu_id: int = -1, max_chars: int = 2_000_000, forks: bool = False) -> LoadedPipeline:
    """Load a pipeline once per process (a path, or an installed package name). `forks`: one for
    nlp.pipe(n_process > 1), kept apart because worker processes forked from a pipeline that has
    run memory zones can crash (segfaults in the workers' garbage collection)."""
    key = (str(model), gpu_id, max_chars, forks)
    with _PIPELINE_LOCK:
        if key not in _PIPELINES:
            _PIPELINES[key] = _load_pipeline(model, gpu_id, max_chars)
    return _PIPELINES[key]


def pipeline_for(settings: AnnotateSettings) -> LoadedPipeline:
    return get_pipeline(settings.model, settings.gpu_id, settings.max_chars, forks=settings.n_process > 1)


def _load_pipeline(model: str, gpu_id: int, max_chars: int) -> LoadedPipeline:
    try:
        nlp = load_srl_pipeline(model, gpu_id)
    except PipelineLoadError as err:
        raise AnnotateInputError(str(err)) from err
    provenance = pipeline_provenance(nlp, model)
    nlp.max_length = max_chars + 1
    # The transformer's outputs are not needed once the frames are set; dropping them keeps
    # memory flat and spares serialising them between worker processes.
    nlp.add_pipe("doc_cleaner", name="annotate_cleaner", config={"attrs": {"tensor": None, "_.trf_data": None}})
    return LoadedPipeline(nlp, provenance)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def _files_sha256(folder: Optional[Path]) -> str:
    """One hash of every file of a pipeline folder: a retrained model with the same config differs."""
    if folder is None or not Path(folder).is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf8"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def pipeline_provenance(nlp: Language, model: str) -> Dict[str, str]:
    meta = nlp.meta
    return {
        "schema_version": SCHEMA_VERSION,
        "model": str(model),
        "model_name": f"{meta.get('lang', '')}_{meta.get('name', '')}",
        "model_version": str(meta.get("version", "")),
        "config_sha256": hashlib.sha256(nlp.config.to_str().encode("utf8")).hexdigest(),
        "weights_sha256": _files_sha256(nlp.path),
        "albert_srl_version": _version("albert-srl"),
        "spacy_version": spacy.__version__,
        "spacy_transformers_version": _version("spacy-transformers"),
        "transformers_version": _version("transformers"),
        "torch_version": _version("torch"),
    }


def output_schemas(
    input_schema: pa.Schema, settings: AnnotateSettings, provenance: Optional[Dict[str, str]] = None
) -> Dict[str, pa.Schema]:
    """The output schemas; `doc_id` and carried columns keep their input types."""
    clashes = [c for c in settings.carry if c in RESERVED_COLUMNS]
    if clashes:
        raise AnnotateInputError(
            f"--carry {', '.join(clashes)}: output tables already have such columns; rename them in the input"
        )
    missing = [c for c in settings.input_columns() if c not in input_schema.names]
    if missing:
        raise AnnotateInputError(
            f"missing column(s) {', '.join(map(repr, missing))}; the input has: {', '.join(input_schema.names)}"
        )
    doc_id = pa.field("doc_id", input_schema.field(settings.id_column).type)
    carried = [input_schema.field(c) for c in settings.carry]
    i32, text = pa.int32(), pa.string()
    predicate = [
        doc_id, pa.field("sent_idx", i32), pa.field("pred_token_idx", i32),
        pa.field("pred_start_char", i32), pa.field("pred_end_char", i32),
        pa.field("pred_text", text), pa.field("pred_lemma", text), pa.field("pred_sense", text),
    ]  # fmt: skip
    schemas = {
        "arguments": predicate + [
            pa.field("role", text), pa.field("arg_start_token", i32), pa.field("arg_end_token", i32),
            pa.field("arg_start_char", i32), pa.field("arg_end_char", i32), pa.field("arg_text", text),
            pa.field("score", pa.float32()),
        ] + carried,
        "predicates": predicate + [
            pa.field("pred_type", text), pa.field("pred_start_token", i32), pa.field("pred_end_token", i32),
            pa.field("arguments", i32), pa.field("score", pa.float32()),
        ] + carried,
        "tokens": [
            doc_id, pa.field("sent_idx", i32), pa.field("token_idx", i32), pa.field("text", text),
            pa.field("lemma", text), pa.field("pos", text), pa.field("morph", text), pa.field("head", i32),
            pa.field("dep", text), pa.field("start_char", i32), pa.field("end_char", i32),
        ] + carried,
        "documents": [
            doc_id, pa.field("part", text), pa.field("row", pa.int64()), pa.field("status", text),
            pa.field("chars", i32), pa.field("tokens", i32), pa.field("sentences", i32),
            pa.field("predicates", i32), pa.field("arguments", i32),
        ] + carried,
        "errors": [doc_id, pa.field("part", text), pa.field("row", pa.int64()), pa.field("reason", text)],
    }  # fmt: skip
    metadata = {METADATA_KEY: json.dumps(provenance or {}, sort_keys=True).encode("utf8")}
    return {name: pa.schema(fields, metadata=metadata) for name, fields in schemas.items()}


def _values(column: pa.ChunkedArray) -> List[Any]:
    """Python values of an id or carried column; invalid UTF-8 is kept visible as \\x escapes."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        raw = column.cast(pa.large_binary()).to_pylist()
        return [None if v is None else v.decode("utf8", "backslashreplace") for v in raw]


def _decoded(column: pa.ChunkedArray) -> Tuple[List[Any], List[Optional[str]]]:
    """Python values of a string column, with a reason for each value that is not valid text."""
    reasons: List[Optional[str]] = [None] * len(column)
    kind = column.type
    if pa.types.is_dictionary(kind) or getattr(pa.types, "is_string_view", lambda _: False)(kind):
        if pa.types.is_dictionary(kind) and not (
            pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
        ):
            return [None] * len(column), [f"the column has type {kind}, not string; cast it to string"] * len(column)
        column, kind = column.cast(pa.large_string()), pa.large_string()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return column.to_pylist(), reasons
        except UnicodeDecodeError:  # Parquet does not validate UTF-8; decode row by row below
            column = column.cast(pa.large_binary())
    elif not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        return [None] * len(column), [f"the column has type {kind}, not string; cast it to string"] * len(column)
    values: List[Any] = []
    for i, raw in enumerate(column.to_pylist()):
        try:
            values.append(None if raw is None else raw.decode("utf8"))
        except UnicodeDecodeError as err:
            values.append(None)
            reasons[i] = (
                f"text is not valid UTF-8 at byte {err.start} ({err.reason}, e.g. a lone surrogate); re-encode it"
            )
    return values, reasons


def _token_lists(column: pa.ChunkedArray) -> Tuple[List[Any], List[Optional[str]]]:
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_string(kind.value_type):
        return [None] * len(column), [f"the tokens column has type {kind}, not list<string>"] * len(column)
    try:
        values = column.to_pylist()
    except UnicodeDecodeError:
        return [None] * len(column), ["tokens are not valid UTF-8; re-encode them"] * len(column)
    reasons: List[Optional[str]] = [None] * len(values)
    for i, tokens in enumerate(values):
        if tokens is None:
            continue
        bad = next((j for j, t in enumerate(tokens) if not t), None)
        if bad is not None:
            reasons[i] = f"token {bad} is null or empty"
    return values, reasons


class _Rows:
    """Column lists for one output table."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.columns: Dict[str, list] = {name: [] for name in schema.names}

    def add(self, **values: Any) -> None:
        for name, column in self.columns.items():
            column.append(values.get(name))

    def extend(self, n: int, columns: Dict[str, list], constants: Dict[str, Any]) -> None:
        """`n` rows at once: `columns` gives n values per column, `constants` one value for all n
        rows; other columns are null."""
        for name, column in self.columns.items():
            if name in columns:
                column.extend(columns[name])
            else:
                column.extend([constants.get(name)] * n)

    def append_rows(self, other: "_Rows") -> None:
        """Every row of `other`, a table of the same schema."""
        for name, column in self.columns.items():
            column.extend(other.columns[name])

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=self.schema)


def annotate_table(
    table: pa.Table,
    settings: AnnotateSettings,
    *,
    part: str = "",
    row_offset: int = 0,
    seen_ids: Optional[Set[Any]] = None,
    schemas: Optional[Dict[str, pa.Schema]] = None,
) -> Dict[str, pa.Table]:
    """Annotate the rows of `table` and return the output tables.

    `part` and `row_offset` say where the rows come from (for `documents` and `errors`); `seen_ids`
    carries the ids of earlier batches of the same part, so a repeated id is caught across batches.
    Rows that cannot be annotated become `errors` rows; this function only raises for a missing column.
    """
    loaded = pipeline_for(settings)
    schemas = schemas or output_schemas(table.schema, settings, loaded.provenance)
    rows = {name: _Rows(schema) for name, schema in schemas.items()}
    seen_ids = set() if seen_ids is None else seen_ids
    ids = _values(table[settings.id_column])
    carried = {c: _values(table[c]) for c in settings.carry}
    if settings.tokens_column:
        inputs, reasons = _token_lists(table[settings.tokens_column])
    else:
        inputs, reasons = _decoded(table[settings.text_column])

    todo: List[Tuple[Any, int]] = []
    statuses: List[Optional[str]] = [None] * len(ids)
    for i, doc_id in enumerate(ids):
        reason, value = reasons[i], inputs[i]
        if reason is None:
            if doc_id is None:
                reason = "the id is null"
            elif value is None:
                reason = "the text is null" if not settings.tokens_column else "the tokens are null"
            elif settings.tokens_column is None and len(value) > settings.max_chars:
                reason = (
                    f"the text has {len(value):,} characters, more than --max-chars {settings.max_chars:,}; "
                    "split it or raise the limit"
                )
            elif doc_id in seen_ids:
                statuses[i], reason = (
                    DUPLICATE,
                    "duplicate id: an earlier row of this part has it; this row was not annotated",
                )
        if reason is not None:
            statuses[i] = statuses[i] or ERROR
            rows["errors"].add(doc_id=doc_id, part=part, row=row_offset + i, reason=reason)
        else:
            seen_ids.add(doc_id)
            todo.append((value, i))

    nlp = loaded.nlp
    results: Dict[int, Dict[str, Any]] = {}
    # Forked workers live for one call; their parent's pipeline never enters a memory zone (see get_pipeline).
    zone = nlp.memory_zone() if settings.n_process == 1 else contextlib.nullcontext()
    with _PIPELINE_LOCK, zone:
        for i, doc_or_error in _pipe_isolating_failures(nlp, todo, settings):
            if not isinstance(doc_or_error, str):
                try:
                    results[i] = _add_rows(doc_or_error, ids[i], _carried_row(carried, i), rows)
                except Exception as err:  # costs this row only
                    doc_or_error = f"reading the frames failed: {type(err).__name__}: {err}"
            if isinstance(doc_or_error, str):
                statuses[i] = ERROR
                rows["errors"].add(doc_id=ids[i], part=part, row=row_offset + i, reason=doc_or_error)
    for i, doc_id in enumerate(ids):
        counts = results.get(i, {})
        status = statuses[i] or (OK if counts.get("tokens") else EMPTY)
        rows["documents"].add(
            doc_id=doc_id, part=part, row=row_offset + i, status=status, **counts, **_carried_row(carried, i)
        )
    return {name: r.table() for name, r in rows.items()}


def _carried_row(carried: Dict[str, List[Any]], i: int) -> Dict[str, Any]:
    return {c: values[i] for c, values in carried.items()}


def _make_doc(nlp: Language, value: Any) -> Any:
    if isinstance(value, list):  # pre-tokenized: tokens joined by single spaces
        return Doc(nlp.vocab, words=value, spaces=[True] * (len(value) - 1) + [False] if value else [])
    return value


def _size(value: Any) -> int:
    return sum(len(t) + 1 for t in value) if isinstance(value, list) else len(value)


def _batches(todo: Sequence[Tuple[Any, int]], settings: AnnotateSettings) -> Iterable[List[Tuple[Any, int]]]:
    """At most `batch_size` docs and `batch_chars` characters per batch (a longer doc goes alone):
    the transformer encodes a whole batch at once, so its memory follows the batch's text size."""
    batch: List[Tuple[Any, int]] = []
    chars = 0
    for item in todo:
        size = _size(item[0])
        if batch and (len(batch) >= settings.batch_size or chars + size > settings.batch_chars):
            yield batch
            batch, chars = [], 0
        batch.append(item)
        chars += size
    if batch:
        yield batch


def _pipe_isolating_failures(
    nlp: Language, todo: Sequence[Tuple[Any, int]], settings: AnnotateSettings
) -> Iterable[Tuple[int, Any]]:
    """(row index, Doc) in input order; a batch that fails is redone one doc at a time in this
    process, so one bad document costs only its own row: (row index, reason) for it."""
    if settings.n_process > 1:  # worker processes live for this call only; spaCy batches for them
        batches = [list(todo)]
    else:
        batches = _batches(todo, settings)
    for batch in batches:
        done = 0
        try:
            items = ((_make_doc(nlp, value), i) for value, i in batch)
            for doc, i in nlp.pipe(items, as_tuples=True, batch_size=settings.batch_size, n_process=settings.n_process):
                done += 1
                yield i, doc
        except Exception as err:
            warnings.warn(
                f"a batch failed ({type(err).__name__}: {str(err)[:200]}); "
                f"redoing its {len(batch) - done} document(s) one at a time in this process"
            )
            for value, i in batch[done:]:
                try:
                    yield i, nlp(_make_doc(nlp, value))
                except Exception as err:
                    yield i, f"annotation failed: {type(err).__name__}: {err}"
        release_free_memory()


def _sentence_index(doc: Doc) -> numpy.ndarray:
    if len(doc) and doc.has_annotation("SENT_START"):
        starts = (doc.to_array("SENT_START") == 1).astype(numpy.int32)
        starts[0] = 1
        return numpy.cumsum(starts) - 1
    return numpy.zeros(len(doc), dtype=numpy.int32)


def _add_rows(doc: Doc, doc_id: Any, carried: Dict[str, Any], rows: Dict[str, _Rows]) -> Dict[str, int]:
    """One annotated document's rows in every table but `documents`; returns its counts for that one.
    Table rows are added only once all were built, so a failure leaves no partial document."""
    staged = {name: _Rows(rows[name].schema) for name in ("predicates", "arguments", "tokens")}
    sent_of = _sentence_index(doc)
    counts = _add_frames(doc, doc_id, carried, staged, sent_of)
    _add_tokens(doc, doc_id, carried, staged, sent_of)
    for name, table in staged.items():
        rows[name].append_rows(table)
    return counts


def _add_tokens(doc: Doc, doc_id: Any, carried: Dict[str, Any], rows: Dict[str, _Rows], sent_of: numpy.ndarray) -> None:
    """A row per token, built column by column from the Doc's arrays; lemma, pos, morph, head and
    dep stay null where the pipeline does not set them."""
    n = len(doc)
    strings = doc.vocab.strings
    starts = doc.to_array("IDX").astype(numpy.int64)
    texts = [token.text for token in doc]
    columns = {
        "sent_idx": sent_of[:n].tolist(),
        "token_idx": list(range(n)),
        "text": texts,
        "start_char": starts.tolist(),
        "end_char": (starts + numpy.fromiter(map(len, texts), numpy.int64, n)).tolist(),
    }
    for name, attr in (("lemma", "LEMMA"), ("pos", "POS"), ("dep", "DEP")):
        if doc.has_annotation(attr):
            columns[name] = [strings[int(value)] for value in doc.to_array(attr)]
    if doc.has_annotation("MORPH"):
        columns["morph"] = [str(token.morph) for token in doc]
    if doc.has_annotation("DEP"):
        # to_array gives each head as an offset from its token
        columns["head"] = (numpy.arange(n) + doc.to_array("HEAD").astype(numpy.int64)).tolist()
    rows["tokens"].extend(n, columns, {**carried, "doc_id": doc_id})


def _add_frames(
    doc: Doc, doc_id: Any, carried: Dict[str, Any], rows: Dict[str, _Rows], sent_of: numpy.ndarray
) -> Dict[str, int]:
    frames = get_frames(doc)
    n_arguments = 0
    for frame in frames:
        pred = frame.predicate
        sense = frame.sense
        lemma = sense.rsplit(".", 1)[0] if "." in sense else (doc[frame.head].lemma_ or doc[frame.head].lower_)
        common = dict(
            doc_id=doc_id, sent_idx=int(sent_of[frame.head]), pred_token_idx=frame.head,
            pred_start_char=pred.start_char, pred_end_char=pred.end_char,
            pred_text=pred.text, pred_lemma=lemma, pred_sense=sense, **carried,
        )  # fmt: skip
        rows["predicates"].add(
            **common, pred_type=frame.predicate_type, pred_start_token=pred.start, pred_end_token=pred.end,
            arguments=len(frame.arguments), score=frame.score,
        )  # fmt: skip
        for arg in frame.arguments:
            span = arg.span
            rows["arguments"].add(
                **common, role=arg.role, arg_start_token=span.start, arg_end_token=span.end,
                arg_start_char=span.start_char, arg_end_char=span.end_char, arg_text=span.text, score=arg.score,
            )  # fmt: skip
        n_arguments += len(frame.arguments)
    return {
        "chars": len(doc.text),
        "tokens": len(doc),
        "sentences": int(sent_of[-1]) + 1 if len(doc) else 0,
        "predicates": len(frames),
        "arguments": n_arguments,
    }


def read_provenance(schema: pa.Schema) -> Dict[str, str]:
    """The provenance a Parquet output file carries in its key-value metadata."""
    return json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))
