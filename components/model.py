"""The SRL model: token vectors from a tok2vec (a transformer listener) and a small PyTorch head.

The encoder runs once per document. The head then scores, from the same token vectors:
- each token as a predicate (`O` or a predicate type), and each predicate's roleset;
- for each predicate, every token of its sentence with BIO argument labels. The predicate's own
  vector, its distance to the token and a predicate-aware BiLSTM over the sentence condition the
  labels on the predicate, instead of re-encoding the sentence per predicate.
"""

from typing import List, Optional, Tuple

import torch
from spacy.tokens import Doc
from thinc.api import Model, PyTorchWrapper_v2
from thinc.types import Floats2d
from torch import nn

from albert_srl.components.torch_updates import update_in_place


class SRLHead(nn.Module):
    """The PyTorch head. With `pair_width` (SRLModel.v2), (predicate, token) pairs are built at that
    width from terms computed once per token and once per predicate, the token x predicate product in
    a low-rank form; without it (v1), at the hidden width, the product through a full linear layer
    per pair. The pair layers run once per (predicate, token) pair, several per token, so their
    width sets the head's cost."""

    def __init__(
        self,
        width: int,
        hidden: int,
        n_predicate_labels: int,
        n_senses: int,
        n_bio: int,
        lstm_depth: int,
        max_distance: int,
        dropout: float,
        pair_width: Optional[int] = None,
    ):
        super().__init__()
        self.max_distance = max_distance
        self.factorized = pair_width is not None
        pair = pair_width or hidden
        # encoder outputs are small (std ~0.25 per dimension): normalise before the projection
        self.token = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
        self.predicate_out = nn.Linear(hidden, n_predicate_labels)
        self.sense_out = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, max(n_senses, 1))
        )
        self.arg_token = nn.Linear(hidden, pair)
        self.arg_predicate = nn.Linear(hidden, pair, bias=False)
        if self.factorized:
            self.arg_pair_token = nn.Linear(hidden, pair, bias=False)
            self.arg_pair_predicate = nn.Linear(hidden, pair, bias=False)
        else:
            self.arg_pair = nn.Linear(hidden, hidden, bias=False)
        self.distance = nn.Embedding(2 * max_distance + 2, pair)
        self.pair_norm = nn.LayerNorm(pair)
        self.lstm = (
            nn.LSTM(
                pair,
                pair // 2,
                num_layers=lstm_depth,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if lstm_depth > 1 else 0.0,
            )
            if lstm_depth > 0
            else None
        )
        self.arg_out = nn.Sequential(
            nn.GELU(), nn.Dropout(dropout), nn.Linear(pair, pair), nn.GELU(), nn.Linear(pair, n_bio)
        )
        # prediction only, set by the pipe (`srl` factory's `cpu_bf16`): the BiLSTM under CPU bf16 autocast
        self.cpu_bf16_lstm = False

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return self.token(X)

    def predicates(self, H: torch.Tensor) -> torch.Tensor:
        return self.predicate_out(H)

    def senses(self, H: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        return self.sense_out(H[heads])

    def sense_candidates(
        self, H: torch.Tensor, heads: torch.Tensor, rows: torch.Tensor, senses: torch.Tensor
    ) -> torch.Tensor:
        """`senses(H, heads)[rows, senses]` without the other logits: a word form has a few candidate
        rolesets among thousands, and the full output layer was most of the sense scorer's cost."""
        hidden = self.sense_out[:-1](H[heads])
        out = self.sense_out[-1]
        return (hidden[rows] * out.weight[senses]).sum(dim=1) + out.bias[senses]

    def token_terms(self, H: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The argument scorer's per-token terms: a sentence's tokens recur for each of its predicates."""
        if self.factorized:
            return self.arg_token(H), self.arg_pair_token(H)
        return (self.arg_token(H),)

    def arguments(
        self,
        H: torch.Tensor,
        heads: torch.Tensor,
        starts: torch.Tensor,
        lengths: torch.Tensor,
        token_terms: Optional[Tuple[torch.Tensor, ...]] = None,
    ) -> torch.Tensor:
        """BIO logits (n_predicates, max_length, n_bio) over each predicate's sentence.
        `token_terms` is `self.token_terms(H)`, when a caller scoring predicates in chunks has it already."""
        max_len = int(lengths.max()) if len(lengths) else 0
        positions = torch.arange(max_len, device=H.device)
        tokens = starts[:, None] + positions[None, :]  # (P, L) global token index
        mask = positions[None, :] < lengths[:, None]
        tokens = torch.where(mask, tokens, torch.zeros_like(tokens))
        offset = (tokens - heads[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        offset = torch.where(tokens == heads[:, None], torch.full_like(offset, 2 * self.max_distance + 1), offset)
        if token_terms is None:
            token_terms = self.token_terms(H)
        pred_h = H[heads]
        pairs = token_terms[0][tokens] + self.arg_predicate(pred_h)[:, None, :] + self.distance(offset)
        if self.factorized:
            pairs = pairs + token_terms[1][tokens] * self.arg_pair_predicate(pred_h)[:, None, :]
        else:
            pairs = pairs + self.arg_pair(H[tokens] * pred_h[:, None, :])
        pairs = self.pair_norm(pairs)
        if self.lstm is not None:
            pairs = pairs + self.context(pairs, lengths)  # residual: the direct path learns fast, the LSTM adds context
        return self.arg_out(pairs)

    def context(self, pairs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over each predicate's padded row; zeros at padding. On padded rows (CPU LSTMs run
        packed sequences slower), except for deeper LSTMs and training on a GPU (cuDNN packs well)."""
        if self.lstm.num_layers != 1 or not len(lengths) or (self.training and pairs.device.type != "cpu"):
            return self.packed_context(pairs, lengths)
        return self.padded_context(pairs, lengths)

    def packed_context(self, pairs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(pairs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        context, _ = nn.utils.rnn.pad_packed_sequence(
            self.lstm(packed)[0], batch_first=True, total_length=pairs.shape[1]
        )
        return context

    def padded_context(self, pairs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed numbers without packing. Padding trails each row, so the forward direction is
        exact as it is; the backward one runs on each row reversed within its length, which makes its
        padding trail too."""
        lstm = self.lstm
        n_rows, max_len, _ = pairs.shape
        state = (pairs.new_zeros(1, n_rows, lstm.hidden_size), pairs.new_zeros(1, n_rows, lstm.hidden_size))
        flipped = lengths[:, None] - 1 - torch.arange(max_len, device=pairs.device)[None, :]
        valid = flipped >= 0
        # (row, position) indexing copies whole vectors; torch.gather would read an index per element
        rows, flipped = torch.arange(n_rows, device=pairs.device)[:, None], flipped.clamp(min=0)
        reversed_rows = pairs[rows, flipped]
        # bf16 (`cpu_bf16_lstm`): the recurrence's many small matrix products are where AMX pays; the
        # outputs go back to fp32 for the residual sum
        with torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16_lstm and not self.training and pairs.device.type == "cpu"
        ):
            forward = _lstm_direction(pairs, state, lstm, "")
            backward = _lstm_direction(reversed_rows, state, lstm, "_reverse")
        backward = backward[rows, flipped]
        return torch.cat([forward, backward], dim=2).float() * valid[:, :, None]


def _lstm_direction(rows: torch.Tensor, state, lstm: torch.nn.LSTM, suffix: str) -> torch.Tensor:
    """One direction of `lstm`'s single layer over padded, batch-first `rows` (`suffix` "" or
    "_reverse" picks the direction's weights), without the packing `nn.LSTM` would need."""
    weights = [getattr(lstm, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    has_biases, num_layers, dropout, train, bidirectional, batch_first = True, 1, 0.0, False, False, True
    return torch.lstm(rows, state, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)[0]


def build_srl_model(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    lstm_depth: int = 1,
    max_distance: int = 32,
    dropout: float = 0.1,
) -> Model:
    """`albert_srl.SRLModel.v1`: tok2vec + SRL head, pairs at the hidden width. The head is built
    once the labels are known. Docs: docs/srl-pipe.md."""
    return srl_model(tok2vec, hidden_width, None, lstm_depth, max_distance, dropout)


def build_srl_model_v2(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    pair_width: int = 128,
    lstm_depth: int = 1,
    max_distance: int = 32,
    dropout: float = 0.1,
) -> Model:
    """`albert_srl.SRLModel.v2`: tok2vec + SRL head, (predicate, token) pairs at `pair_width` from
    per-token and per-predicate terms (a low-rank product). Docs: docs/srl-pipe.md."""
    return srl_model(tok2vec, hidden_width, pair_width, lstm_depth, max_distance, dropout)


def srl_model(
    tok2vec: Model, hidden_width: int, pair_width: Optional[int], lstm_depth: int, max_distance: int, dropout: float
) -> Model:
    return Model(
        "srl_model",
        forward,
        layers=[tok2vec],
        refs={"tok2vec": tok2vec},
        attrs={
            "hidden_width": hidden_width,
            "pair_width": pair_width,
            "lstm_depth": lstm_depth,
            "max_distance": max_distance,
            "dropout": dropout,
        },
    )


def forward(model: Model, docs: List[Doc], is_train: bool):
    """Token vectors per doc from the tok2vec; the pipe drives the PyTorch head itself."""
    tokvecs, backprop = model.get_ref("tok2vec")(docs, is_train)
    return tokvecs, backprop


def build_head(model: Model, width: int, n_predicate_labels: int, n_senses: int, n_bio: int) -> None:
    """Create the PyTorch head for these label counts (at initialize, or before loading weights)."""
    a = model.attrs
    module = SRLHead(
        width,
        a["hidden_width"],
        n_predicate_labels,
        n_senses,
        n_bio,
        a["lstm_depth"],
        a["max_distance"],
        a["dropout"],
        a["pair_width"],
    )
    head = update_in_place(PyTorchWrapper_v2(module))
    if model.has_ref("head"):
        model.layers[1] = head
    else:
        model.layers.append(head)
    model.set_ref("head", head)


def head_module(model: Model) -> SRLHead:
    """The PyTorch head inside an SRL model (after `build_head`)."""
    return model.get_ref("head").shims[0]._model
