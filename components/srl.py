"""`srl`: a trainable spaCy pipe that finds predicates, their PropBank sense and argument spans.

It listens to a shared encoder (a spacy-transformers `transformer`, or any tok2vec), which runs
once per document; see `model.py` for the head and `decoding.py` for the constraints. Frames are
written to `doc.spans` as documented in `frames.py`; `doc._.srl_frames` reads them back.
"""

import os
from collections import Counter, defaultdict
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy
import srsly
import torch
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_get_examples
from spacy.util import from_disk as util_from_disk
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, torch2xp, xp2torch

from albert_srl.components.decoding import bio_labels, decode_arguments_batch, viterbi_bio_batch
from albert_srl.components.frames import FrameSpec, frame_specs, set_frames
from albert_srl.components.model import build_head, head_module
from albert_srl.components.scoring import score_srl
from albert_srl.components.senses import senses_by_lemma, unseen_form_senses
from albert_srl.components.targets import PREDICATE_LABELS, TrainingTargets, training_targets
from albert_srl.components.transformer import cpu_bf16_supported

# The head of configs/srl_trf.cfg, listening to the pipeline's transformer. The head optimizer
# updates the randomly initialised head at its own rate while the encoder keeps the training
# optimizer's (small, warmed-up) one.
DEFAULT_CONFIG = """
[model]
@architectures = "albert_srl.SRLModel.v2"
hidden_width = 256
pair_width = 128
lstm_depth = 1
max_distance = 32
dropout = 0.1

[model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "reduce_mean.v1"

[head_optimizer]
@optimizers = "Adam.v1"
learn_rate = 0.002
beta1 = 0.9
beta2 = 0.999
eps = 0.00000001
L2 = 0.01
L2_is_weight_decay = true
grad_clip = 1.0
use_averages = true
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_CONFIG)["model"]
DEFAULT_HEAD_OPTIMIZER = Config().from_str(DEFAULT_CONFIG)["head_optimizer"]


@Language.factory(
    "srl",
    assigns=["doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "max_window": 128,
        "head_optimizer": DEFAULT_HEAD_OPTIMIZER,
        "head_learn_rate": None,
        "cpu_bf16": False,
        "argument_o_bias": 0.0,
        "scorer": {"@scorers": "albert_srl.srl_scorer.v1"},
    },
    default_score_weights={
        "srl_f": 1.0,
        "srl_pred_f": 0.0,
        "srl_sense_acc": 0.0,
        "srl_e2e_f": 0.0,
        "srl_p": None,
        "srl_r": None,
    },
)
def make_srl(
    nlp: Language,
    name: str,
    model: Model,
    max_window: int,
    head_optimizer: Optional[Optimizer],
    head_learn_rate: Optional[float],
    cpu_bf16: bool,
    argument_o_bias: float,
    scorer: Optional[Callable],
) -> "SemanticRoleLabeler":
    """Create an `srl` pipe. `head_optimizer` updates the head (null: the training optimizer does).
    `head_learn_rate` comes from configs written before `head_optimizer` (saved pipelines have it):
    0 means no head optimizer, another value is the head optimizer's learn rate.
    `argument_o_bias` is taken off the `O` label's log-probability before decoding: above 0, the
    pipe marks more arguments (recall up, precision down), a trade to tune on dev.
    Docs: docs/srl-pipe.md."""
    if head_learn_rate is not None:
        if not head_learn_rate:
            head_optimizer = None
        elif head_optimizer is not None:
            head_optimizer.learn_rate = head_learn_rate
    return SemanticRoleLabeler(
        nlp.vocab,
        model,
        name,
        max_window=max_window,
        head_optimizer=head_optimizer,
        cpu_bf16=cpu_bf16,
        argument_o_bias=argument_o_bias,
        scorer=scorer,
    )


_FORKS_USE_ONE_THREAD = False


def one_thread_per_worker() -> None:
    """Make every process forked from this one run torch on one thread; idempotent.

    spaCy's `nlp.pipe(n_process=...)` forks its workers on Linux: a worker that uses the OpenMP
    thread pool it inherited deadlocks in it, and workers sharing the cores should not each take
    them all."""
    global _FORKS_USE_ONE_THREAD
    if not _FORKS_USE_ONE_THREAD:
        os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))
        _FORKS_USE_ONE_THREAD = True


@registry.scorers("albert_srl.srl_scorer.v1")
def make_srl_scorer():
    return score_srl


class SenseCandidates(NamedTuple):
    """The rolesets each predicate may take, flat: the i-th candidate is roleset `sense_ids[i]` for
    predicate `rows[i]`; predicate k's candidates are `starts[k]:starts[k + 1]`."""

    rows: numpy.ndarray
    sense_ids: numpy.ndarray
    starts: numpy.ndarray


class SemanticRoleLabeler(TrainablePipe):
    """Predicates (verbal, nominal, adjectival), senses and arguments, from one encoding per doc."""

    # padded (predicate, token) pairs scored at once: the argument scorer holds several (chunk,
    # window, hidden) tensors, so this bounds peak memory (64 predicates x 128-token windows)
    chunk_pairs = 8192
    chunk_padding, chunk_min_rows = 0.1, 64

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "srl",
        *,
        max_window: int = 128,
        head_optimizer: Optional[Optimizer] = None,
        cpu_bf16: bool = False,
        argument_o_bias: float = 0.0,
        scorer: Optional[Callable] = score_srl,
    ):
        # Here, not where the project starts workers: a user's own nlp.pipe(n_process=2) forks too,
        # and this pipe exists in the parent before any fork (a worker's first predict would be too
        # late: the transformer runs before it).
        one_thread_per_worker()
        self.vocab = vocab
        # prediction on a CPU with bf16 support runs the argument BiLSTM under bf16 autocast
        self.cpu_bf16_lstm = cpu_bf16 and cpu_bf16_supported()
        # updates the head (its state lives here, with the pipe); None: the training optimizer does
        self.head_optimizer = head_optimizer
        # a setting of the config (like cpu_bf16), not of cfg: a load can change it
        self.argument_o_bias = argument_o_bias
        self.model = model
        self.name = name
        self.scorer = scorer
        # Everything the pipe must remember lives in cfg, so to_disk/from_disk need nothing else.
        self.cfg = {"roles": [], "senses": [], "lexicon": {}, "width": None, "max_window": max_window}

    # ------------------------------------------------------------------ labels
    @property
    def roles(self) -> List[str]:
        return self.cfg["roles"]

    @property
    def senses(self) -> List[str]:
        return self.cfg["senses"]

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.roles)

    def _build_head(self) -> None:
        self._sense_index = {s: i for i, s in enumerate(self.senses)}
        self._senses_by_lemma = senses_by_lemma(self.cfg["lexicon"])
        self._role_index = {r: i for i, r in enumerate(self.roles)}
        build_head(self.model, self.cfg["width"], len(PREDICATE_LABELS), len(self.senses), len(bio_labels(self.roles)))

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None) -> None:
        """Collect roles, senses and the form -> senses lexicon from the examples; build the head."""
        validate_get_examples(get_examples, "SemanticRoleLabeler.initialize")
        roles, senses, lexicon = Counter(), Counter(), defaultdict(Counter)
        sample = []
        for eg in get_examples():
            if len(sample) < 10:
                sample.append(eg.predicted)
            for frame in frame_specs(eg.reference):
                senses[frame.sense] += 1
                lexicon[eg.reference[frame.head].lower_][frame.sense] += 1
                roles.update(role for role, _, _ in frame.arguments)
        self.cfg["roles"] = sorted(roles)
        self.cfg["senses"] = sorted(senses)
        # candidate senses per word form, most frequent first
        self.cfg["lexicon"] = {form: [s for s, _ in c.most_common()] for form, c in sorted(lexicon.items())}
        tok2vec = self.model.get_ref("tok2vec")
        tok2vec.initialize(X=sample)
        self.cfg["width"] = int(tok2vec.predict(sample)[0].shape[1])
        self._build_head()

    # ------------------------------------------------------------------ windows
    def _windows(
        self, doc: Doc, heads: Sequence[int], sent_starts: Optional[Sequence[bool]] = None
    ) -> List[Tuple[int, int]]:
        """The token range each predicate's arguments may come from: its sentence, clipped."""
        if sent_starts is None:
            has_sents = doc.has_annotation("SENT_START")
            # to_array: no Token objects (building one per token is slow)
            sent_starts = (doc.to_array("SENT_START") == 1) if has_sents else [i == 0 for i in range(len(doc))]
        flags = numpy.array(sent_starts, dtype=bool)
        flags[:1] = True
        starts = numpy.flatnonzero(flags)
        ends = numpy.append(starts[1:], len(doc))
        half = self.cfg["max_window"] // 2
        heads = numpy.asarray(heads, dtype=numpy.int64)
        k = numpy.searchsorted(starts, heads, side="right") - 1
        low = numpy.maximum(starts[k], heads - half) if len(heads) else heads
        high = numpy.minimum(ends[k], heads + half) if len(heads) else heads
        return list(zip(low.tolist(), high.tolist()))

    def _token_matrix(self, tokvecs, requires_grad: bool = False) -> torch.Tensor:
        """All docs' token vectors as one (n_tokens, width) tensor."""
        arrays = [self.model.ops.asarray2f(t) for t in tokvecs if len(t)]
        return xp2torch(self.model.ops.xp.concatenate(arrays), requires_grad=requires_grad).float()

    # ------------------------------------------------------------------ prediction
    def predict(self, docs: Iterable[Doc], given_heads: Optional[List[List[int]]] = None):
        """Frames per doc: (heads, types, senses, arguments, scores). `given_heads` skips predicate finding."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [[] for _ in docs]
        tokvecs = self.model.predict(docs)
        module = head_module(self.model)
        module.eval()
        module.cpu_bf16_lstm = self.cpu_bf16_lstm
        lengths = [len(doc) for doc in docs]
        offsets = numpy.cumsum([0] + lengths)
        with torch.no_grad():
            H = module.encode(self._token_matrix(tokvecs))
            pred_probs = torch.softmax(module.predicates(H).float(), dim=-1).cpu().numpy()
            heads, windows, doc_of = self._predicate_windows(docs, pred_probs, offsets, given_heads)
            results = [[] for _ in docs]
            if not heads:
                return results
            # index tensors live where the head does (a GPU too); numpy copies serve the CPU side
            device = H.device
            heads_np = numpy.asarray(heads, dtype=numpy.int64)
            starts_np = numpy.array([s for s, _ in windows], dtype=numpy.int64)
            lengths_np = numpy.array([e - s for s, e in windows], dtype=numpy.int64)
            heads_t = torch.from_numpy(heads_np).to(device)
            forms = [docs[d][int(head - offsets[d])].lower_ for head, d in zip(heads, doc_of)]
            sense_candidates = self._sense_candidates(forms)
            sense_scores = (
                module.sense_candidates(
                    H,
                    heads_t,
                    *(torch.from_numpy(a).to(device) for a in (sense_candidates.rows, sense_candidates.sense_ids)),
                )
                .float()
                .cpu()
                .numpy()
            )
            decoded = self._decode_arguments(module, H, heads_t, heads_np, starts_np, lengths_np)
        for k, head in enumerate(heads):
            d = doc_of[k]
            local = head - offsets[d]
            shift = windows[k][0] - offsets[d]  # window offsets -> doc offsets
            probs = pred_probs[head]
            type_id = int(probs[1:].argmax()) + 1
            sense = self._choose_sense(forms[k], sense_candidates, sense_scores, k)
            arguments = [(role, s + shift, e + shift, score) for role, s, e, score in decoded[k]]
            results[d].append((local, PREDICATE_LABELS[type_id], sense, float(1.0 - probs[0]), arguments))
        return results

    def _predicate_windows(
        self, docs: List[Doc], pred_probs: numpy.ndarray, offsets: numpy.ndarray, given_heads
    ) -> Tuple[List[int], List[Tuple[int, int]], List[int]]:
        """The predicates of the batch (the given ones, or the tokens whose best label is not "not a
        predicate"): their heads and argument windows in batch token offsets, and their doc's index."""
        heads, windows, doc_of = [], [], []
        for d, doc in enumerate(docs):
            if given_heads is not None:
                doc_heads = list(given_heads[d])
            else:
                doc_heads = numpy.flatnonzero(pred_probs[offsets[d] : offsets[d + 1]].argmax(axis=1) != 0).tolist()
            heads.extend(offsets[d] + h for h in doc_heads)
            windows.extend((offsets[d] + s, offsets[d] + e) for s, e in self._windows(doc, doc_heads))
            doc_of.extend([d] * len(doc_heads))
        return heads, windows, doc_of

    def _decode_arguments(
        self,
        module,
        H: torch.Tensor,
        heads_t: torch.Tensor,
        heads: numpy.ndarray,
        starts: numpy.ndarray,
        lengths: numpy.ndarray,
    ) -> List[list]:
        """Each predicate's arguments (role, start, end, score) in window offsets, decoded under the
        constraints. Predicates go in chunks of similar window length (little padding for the linear
        layers), each at most `chunk_pairs` padded pairs: memory stays bounded however many a batch holds.
        `heads_t` is `heads` on the head's device (`predict` has it already)."""
        device = H.device
        starts_t, lengths_t = (torch.from_numpy(a).to(device) for a in (starts, lengths))
        decoded = [None] * len(heads)
        token_terms = module.token_terms(H)
        for chunk in self._length_sorted_chunks(lengths):
            chunk_t = torch.from_numpy(chunk).to(device)
            logits = module.arguments(H, heads_t[chunk_t], starts_t[chunk_t], lengths_t[chunk_t], token_terms).float()
            log_probs = torch.log_softmax(logits, dim=-1).cpu().numpy()
            if self.argument_o_bias:
                log_probs[..., 0] -= self.argument_o_bias
            # constrained Viterbi for the whole chunk at once: per-predicate numpy loops cost more
            paths = viterbi_bio_batch(log_probs, lengths[chunk], heads[chunk] - starts[chunk])
            for k, arguments in zip(chunk.tolist(), decode_arguments_batch(log_probs, paths, self.roles)):
                decoded[k] = arguments
        return decoded

    def _length_sorted_chunks(self, lengths: numpy.ndarray) -> List[numpy.ndarray]:
        """Predicate indices by window length, cut into chunks of at most `chunk_pairs` padded pairs,
        and cut early where the next window would make more than `chunk_padding` of a chunk padding
        (once it holds `chunk_min_rows` predicates): a batch's windows range from a few tokens to a
        whole sentence, and padding the short ones to the longest would have the head score mostly
        padding."""
        order = numpy.argsort(lengths, kind="stable")
        sorted_lengths = numpy.maximum(lengths[order], 1)
        real = numpy.concatenate([[0], numpy.cumsum(sorted_lengths)])  # real[k]: pairs in the first k
        chunks, start = [], 0
        for end in range(1, len(order) + 1):
            if end == len(order):
                chunks.append(order[start:end])
                break
            # lengths ascend, so a chunk's padded size is its count times its last length
            padded = (end + 1 - start) * int(sorted_lengths[end])
            too_big = padded > self.chunk_pairs
            too_padded = (
                end - start >= self.chunk_min_rows and 1 - (real[end + 1] - real[start]) / padded > self.chunk_padding
            )
            if too_big or too_padded:
                chunks.append(order[start:end])
                start = end
        return chunks

    def _sense_candidates(self, forms: List[str]) -> SenseCandidates:
        """The rolesets seen with each predicate's word form (for an unseen form, those of its likely
        lemma: components/senses.py), flat: (predicate row, sense id) pairs,
        and where each predicate's run of pairs starts (a predicate without candidates has none)."""
        lexicon, index = self.cfg["lexicon"], self._sense_index
        rows, senses, starts = [], [], []
        for k, form in enumerate(forms):
            starts.append(len(senses))
            for sense in lexicon.get(form) or unseen_form_senses(form, self._senses_by_lemma):
                rows.append(k)
                senses.append(index[sense])
        return SenseCandidates(
            numpy.array(rows, dtype=numpy.int64),
            numpy.array(senses, dtype=numpy.int64),
            numpy.array(starts + [len(senses)], dtype=numpy.int64),
        )

    def _choose_sense(self, form: str, candidates: SenseCandidates, scores: numpy.ndarray, k: int) -> str:
        """The best-scoring roleset among the form's candidates (the lexicon's order breaks ties);
        `<form>.01` if none."""
        start, end = candidates.starts[k], candidates.starts[k + 1]
        if start == end:
            return f"{form}.01"
        return self.senses[candidates.sense_ids[start + int(numpy.argmax(scores[start:end]))]]

    def set_annotations(self, docs: Iterable[Doc], results) -> None:
        for doc, frames in zip(docs, results):
            specs, pred_scores, arg_scores = [], [], []
            for head, ptype, sense, score, arguments in frames:
                specs.append(FrameSpec(head, sense, (head, head + 1), ptype, [(r, s, e) for r, s, e, _ in arguments]))
                pred_scores.append(score)
                arg_scores.extend(a[3] for a in arguments)
            set_frames(doc, specs, scores=(pred_scores, arg_scores))

    def label_given_predicates(self, docs: List[Doc]) -> List[Doc]:
        """Sense and arguments for the predicates already in `doc.spans["srl_predicates"]`
        (gold-predicate evaluation)."""
        heads = [[f.head for f in frame_specs(doc)] for doc in docs]
        self.set_annotations(docs, self.predict(docs, given_heads=heads))
        return docs

    # ------------------------------------------------------------------ training
    def _targets(self, examples: Sequence[Example]) -> TrainingTargets:
        """Gold heads, types, senses, windows and BIO ids, in the predicted docs' token offsets."""
        return training_targets(examples, self._role_index, self._sense_index, self._windows)

    def _loss(self, H: torch.Tensor, targets) -> Tuple[torch.Tensor, Dict[str, float]]:
        module = head_module(self.model)
        device = H.device
        pred_labels, heads, senses, windows, bios = targets
        loss_pred = torch.nn.functional.cross_entropy(
            module.predicates(H).float(), torch.from_numpy(pred_labels).to(device)
        )
        parts = {"predicates": float(loss_pred.detach())}
        loss = loss_pred
        if heads:
            heads_t = torch.tensor(heads, dtype=torch.long, device=device)
            sense_logits = module.senses(H, heads_t).float()
            sense_targets = torch.tensor(senses, dtype=torch.long, device=device)
            if (sense_targets >= 0).any():
                loss_sense = torch.nn.functional.cross_entropy(sense_logits, sense_targets, ignore_index=-100)
                loss = loss + loss_sense
                parts["senses"] = float(loss_sense.detach())
            starts = torch.tensor([s for s, _ in windows], dtype=torch.long, device=device)
            window_lengths = numpy.asarray([e - s for s, e in windows], dtype=numpy.int64)
            lengths = torch.from_numpy(window_lengths).to(device)
            token_terms = module.token_terms(H)
            # length-sorted chunks, as in `predict`: padding every window to the batch's longest had
            # the head spend most of a step on padding; the summed loss over the real tokens is the same
            loss_args = H.new_zeros(())
            for rows in self._length_sorted_chunks(window_lengths):
                index = torch.from_numpy(rows).to(device)
                logits = module.arguments(H, heads_t[index], starts[index], lengths[index], token_terms).float()
                gold = numpy.full(logits.shape[:2], -100, dtype=numpy.int64)
                for k, row in enumerate(rows):
                    gold[k, : len(bios[row])] = bios[row]
                gold = torch.from_numpy(gold).to(device)  # filled on the CPU: one copy to a GPU, not one per row
                loss_args = loss_args + torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=-100, reduction="sum"
                )
            loss_args = loss_args / max(int(window_lengths.sum()), 1)
            loss = loss + loss_args
            parts["arguments"] = float(loss_args.detach())
        return loss, parts

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = [eg for eg in examples if len(eg.predicted)]
        if not examples:
            return losses
        docs = [eg.predicted for eg in examples]
        # the listener receives its batch from the transformer only through begin_update
        tokvecs, backprop = self.model.begin_update(docs)
        module = head_module(self.model)
        module.train()
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = drop
        X = self._token_matrix(tokvecs, requires_grad=True)
        H = module.encode(X)
        loss, _ = self._loss(H, self._targets(examples))
        loss.backward()
        dX = torch2xp(X.grad)
        lengths = numpy.cumsum([len(d) for d in docs])[:-1]
        backprop(list(self.model.ops.xp.split(dX, lengths)))
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += float(loss.detach())
        return losses

    def finish_update(self, sgd: Optimizer) -> None:
        """The encoder (tok2vec) steps with `sgd`; the head with `head_optimizer` if there is one."""
        if self.head_optimizer is None:
            self.model.finish_update(sgd)
            return
        self.model.get_ref("tok2vec").finish_update(sgd)
        self.model.get_ref("head").finish_update(self.head_optimizer)

    def get_loss(self, examples: Iterable[Example], scores) -> Tuple[float, None]:
        """The training loss of `examples` (no gradients): predicate + sense + argument cross-entropy."""
        examples = [eg for eg in examples if len(eg.predicted)]
        tokvecs = self.model.predict([eg.predicted for eg in examples])
        with torch.no_grad():
            loss, _ = self._loss(head_module(self.model).encode(self._token_matrix(tokvecs)), self._targets(examples))
        return float(loss), None

    def add_label(self, label: str) -> int:
        raise NotImplementedError("srl labels come from the training data at initialize()")

    # ------------------------------------------------------------------ serialization
    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        msg = srsly.msgpack_loads(bytes_data)
        self.cfg.update(srsly.json_loads(msg["cfg"]))
        self._build_head()
        self.model.from_bytes(msg["model"])
        return self

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        return srsly.msgpack_dumps({"cfg": srsly.json_dumps(self.cfg), "model": self.model.to_bytes()})

    def from_disk(self, path, *, exclude=tuple()):
        def load_cfg(p):
            self.cfg.update(srsly.read_json(p))
            self._build_head()

        def load_model(p):
            with open(p, "rb") as f:
                self.model.from_bytes(f.read())

        util_from_disk(path, {"cfg": load_cfg, "model": load_model}, exclude)
        return self
