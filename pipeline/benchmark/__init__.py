"""Benchmarks of the SRL pipeline's speed, one module per command, run as
`python -m albert_srl.pipeline.benchmark COMMAND` (cli.py lists the commands):

- floor.py: the whole pipeline against the transformer alone;
- annotate.py, dask_cluster.py: the Parquet annotate path against nlp.pipe, one process against Dask;
- per_predicate.py: this design against one encoder pass per predicate;
- trf_reference.py (reference.py builds the reference): against a roberta-base tagger, parser, ner;
- options.py: speed options and their F1 change; random_pipeline.py: untrained shapes to time;
- train_speed.py: trained words/s of a training config, and a training step's time by part.

Shared: harness.py (child processes, timing in turn), machine.py (CPU/GPU), pipelines.py (loading
at a precision, gold-structure passes), reports.py (JSON and Markdown).
"""

from albert_srl.pipeline.benchmark.cli import app

__all__ = ["app"]
