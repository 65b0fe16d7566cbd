"""A spaCy component that kills its own worker process the first time it sees a marked text.
Dask workers preload this module (LocalCluster(preload=[...])) so the test pipeline loads there."""

import os
from pathlib import Path

from spacy.language import Language

KILL_TEXT = "KILL-THIS-WORKER"


@Language.factory("kill_worker_once", default_config={"marker": ""})
def make_kill_worker_once(nlp: Language, name: str, marker: str):
    def kill_worker_once(doc):
        if KILL_TEXT in doc.text and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)  # as an OOM kill or a lost machine would: no cleanup
        return doc

    return kill_worker_once
