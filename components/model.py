"""The SRL model: token vectors from a tok2vec (a transformer listener) and a small PyTorch head.

The encoder runs once per document. The head then scores, from the same token vectors:
- each token as a predicate (`O` or a predicate type), and each predicate's roleset;
- for each predicate, every token of its sentence with BIO argument labels. The predicate's own
  vector, its distance to the token and a predicate-aware BiLSTM over the sentence condition the
  labels on the predicate, instead of re-encoding the sentence per predicate.
"""
from typing import List, Optional

import torch
from thinc.api import Model, PyTorchWrapper_v2
from thinc.types import Floats2d
from spacy.tokens import Doc
from torch import nn


class SRLHead(nn.Module):
    def __init__(self, width: int, hidden: int, n_predicate_labels: int, n_senses: int, n_bio: int, lstm_depth: int, max_distance: int, dropout: float):
        super().__init__()
        self.max_distance = max_distance
        # encoder outputs are small (std ~0.25 per dimension): normalise before the projection
        self.token = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
        self.predicate_out = nn.Linear(hidden, n_predicate_labels)
        self.sense_out = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, max(n_senses, 1)))
        self.arg_token = nn.Linear(hidden, hidden)
        self.arg_predicate = nn.Linear(hidden, hidden, bias=False)
        self.arg_pair = nn.Linear(hidden, hidden, bias=False)
        self.distance = nn.Embedding(2 * max_distance + 2, hidden)
        self.pair_norm = nn.LayerNorm(hidden)
        self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=lstm_depth, batch_first=True, bidirectional=True, dropout=dropout if lstm_depth > 1 else 0.0) if lstm_depth > 0 else None
        self.arg_out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n_bio))

    def encode(self, X: torch.Tensor) -> torch.Tensor:
        return self.token(X)

    def predicates(self, H: torch.Tensor) -> torch.Tensor:
        return self.predicate_out(H)

    def senses(self, H: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        return self.sense_out(H[heads])

    def arguments(self, H: torch.Tensor, heads: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, token_term: Optional[torch.Tensor] = None) -> torch.Tensor:
        """BIO logits (n_predicates, max_length, n_bio) over each predicate's sentence.
        `token_term` is `arg_token(H)`, when a caller scoring predicates in chunks has it already."""
        max_len = int(lengths.max()) if len(lengths) else 0
        positions = torch.arange(max_len, device=H.device)
        tokens = starts[:, None] + positions[None, :]  # (P, L) global token index
        mask = positions[None, :] < lengths[:, None]
        tokens = torch.where(mask, tokens, torch.zeros_like(tokens))
        token_h = H[tokens]  # (P, L, hidden)
        pred_h = H[heads][:, None, :]
        offset = (tokens - heads[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        offset = torch.where(tokens == heads[:, None], torch.full_like(offset, 2 * self.max_distance + 1), offset)
        # the token term once per token, gathered per pair: a sentence's tokens recur for each of its predicates
        if token_term is None:
            token_term = self.arg_token(H)
        pairs = self.pair_norm(token_term[tokens] + self.arg_predicate(pred_h) + self.arg_pair(token_h * pred_h) + self.distance(offset))
        if self.lstm is not None:
            pairs = pairs + self.context(pairs, lengths)  # residual: the direct path learns fast, the LSTM adds context
        return self.arg_out(pairs)

    def context(self, pairs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over each predicate's padded row; zeros at padding."""
        lstm = self.lstm
        if self.training or lstm.num_layers != 1 or not len(lengths):
            packed = nn.utils.rnn.pack_padded_sequence(pairs, lengths.cpu(), batch_first=True, enforce_sorted=False)
            context, _ = nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=pairs.shape[1])
            return context
        # Prediction: the same numbers without packing (CPU LSTMs run packed sequences ~1.5x slower).
        # Padding trails each row, so the forward direction is exact as it is; the backward one runs
        # on each row reversed within its length, which makes its padding trail too.
        n_rows, max_len, _ = pairs.shape
        state = (pairs.new_zeros(1, n_rows, lstm.hidden_size), pairs.new_zeros(1, n_rows, lstm.hidden_size))
        flipped = lengths[:, None] - 1 - torch.arange(max_len, device=pairs.device)[None, :]
        valid = flipped >= 0
        flipped = flipped.clamp(min=0)[:, :, None].expand(-1, -1, pairs.shape[2])
        forward = torch.lstm(pairs, state, [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0], True, 1, 0.0, False, False, True)[0]
        reversed_rows = torch.gather(pairs, 1, flipped)
        backward = torch.lstm(reversed_rows, state, [lstm.weight_ih_l0_reverse, lstm.weight_hh_l0_reverse, lstm.bias_ih_l0_reverse, lstm.bias_hh_l0_reverse], True, 1, 0.0, False, False, True)[0]
        backward = torch.gather(backward, 1, flipped[:, :, : backward.shape[2]])
        return torch.cat([forward, backward], dim=2) * valid[:, :, None]


def build_srl_model(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    lstm_depth: int = 1,
    max_distance: int = 32,
    dropout: float = 0.1,
) -> Model:
    """`albert_srl.SRLModel.v1`: tok2vec + SRL head. The head is built once the labels are known."""
    model = Model(
        "srl_model",
        forward,
        layers=[tok2vec],
        refs={"tok2vec": tok2vec},
        attrs={"hidden_width": hidden_width, "lstm_depth": lstm_depth, "max_distance": max_distance, "dropout": dropout},
    )
    return model


def forward(model: Model, docs: List[Doc], is_train: bool):
    """Token vectors per doc from the tok2vec; the pipe drives the PyTorch head itself."""
    tokvecs, backprop = model.get_ref("tok2vec")(docs, is_train)
    return tokvecs, backprop


def build_head(model: Model, width: int, n_predicate_labels: int, n_senses: int, n_bio: int) -> None:
    """Create the PyTorch head for these label counts (at initialize, or before loading weights)."""
    a = model.attrs
    module = SRLHead(width, a["hidden_width"], n_predicate_labels, n_senses, n_bio, a["lstm_depth"], a["max_distance"], a["dropout"])
    head = PyTorchWrapper_v2(module)
    if model.has_ref("head"):
        model.layers[1] = head
    else:
        model.layers.append(head)
    model.set_ref("head", head)


def head_module(model: Model) -> SRLHead:
    return model.get_ref("head").shims[0]._model
