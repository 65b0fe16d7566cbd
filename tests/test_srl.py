"""The srl pipe, in the style of spaCy's test_spancat.py: overfitting, serialization,
multiprocessing, empty and predicate-less docs, long docs, token alignment."""

import numpy
import pytest
import spacy
from common import CNN_OVERRIDES, REPO, TRF_OVERRIDES, comparable, gold_token_doc, load_refs, make_nlp, train
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_config

from albert_srl.components.frames import get_frames
from albert_srl.components.model import head_module
from albert_srl.components.scoring import score_srl


@pytest.fixture(scope="module")
def cnn_nlp(mini_corpus):
    nlp = make_nlp("srl_cnn.cfg", CNN_OVERRIDES)
    losses = train(nlp, load_refs(mini_corpus), steps=200)
    return nlp, losses


def test_overfitting_cnn(cnn_nlp, mini_corpus):
    nlp, losses = cnn_nlp
    assert losses["srl"] < 0.05
    for ref in load_refs(mini_corpus):
        doc = nlp(gold_token_doc(nlp, ref))
        assert comparable(doc) == comparable(ref)
        assert [s.start for s in doc.sents] == [s.start for s in ref.sents]


def test_overfitting_factorized_head(mini_corpus):
    """SRLModel.v2 (pairs at pair_width, low-rank product) learns the fixture as well as v1 does."""
    nlp = make_nlp(
        "srl_cnn.cfg",
        {
            **CNN_OVERRIDES,
            "components.srl.model.@architectures": "albert_srl.SRLModel.v2",
            "components.srl.model.pair_width": 32,
        },
    )
    losses = train(nlp, load_refs(mini_corpus), steps=200)
    head = head_module(nlp.get_pipe("srl").model)
    assert head.factorized and head.lstm.hidden_size == 16
    assert losses["srl"] < 0.05
    for ref in load_refs(mini_corpus):
        assert comparable(nlp(gold_token_doc(nlp, ref))) == comparable(ref)


def test_default_config_trains_and_predicts_frames(tiny_albert, mini_corpus):
    """`nlp.add_pipe("srl")` with the factory's defaults (SRLModel.v2, listening to the pipeline's
    transformer; its own head optimizer) learns the fixture and predicts its frames."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_albert), "tokenizer_config": {"use_fast": False}}})
    srl = nlp.add_pipe("srl")
    assert nlp.get_pipe_config("srl")["model"]["@architectures"] == "albert_srl.SRLModel.v2"
    refs = load_refs(mini_corpus)
    losses = train(nlp, refs, steps=100)  # seeded (spacy.util.fix_random_seed)
    assert losses["srl"] < 0.05
    assert srl.head_optimizer.nr_update  # the head stepped with its own optimizer, whose state the pipe holds
    for ref in refs:
        assert comparable(nlp(gold_token_doc(nlp, ref, with_sents=True))) == comparable(ref)


def test_head_optimizer_settings():
    """The default head optimizer is Adam at 2e-3 with weight decay 0.01 and gradient clipping at 1;
    `head_learn_rate` (configs written before `head_optimizer`) sets its rate, and 0 removes it."""
    nlp = spacy.blank("en")
    default = nlp.add_pipe("srl", name="default").head_optimizer
    assert (default.learn_rate, default.L2, default.L2_is_weight_decay, default.grad_clip) == (0.002, 0.01, True, 1.0)
    assert (default.b1, default.b2, default.eps, default.averages) == (0.9, 0.999, 1e-8, {})
    assert nlp.add_pipe("srl", name="older", config={"head_learn_rate": 0.01}).head_optimizer.learn_rate == 0.01
    assert nlp.add_pipe("srl", name="shared", config={"head_learn_rate": 0}).head_optimizer is None
    assert nlp.add_pipe("srl", name="none", config={"head_optimizer": None}).head_optimizer is None


def test_overfitting_transformer(trf_nlp, mini_corpus):
    nlp, losses = trf_nlp
    assert losses["srl"] < 0.05
    refs = load_refs(mini_corpus)
    examples = [Example(nlp(gold_token_doc(nlp, ref)), ref) for ref in refs]
    for eg in examples:
        assert comparable(eg.predicted) == comparable(eg.reference)
    scores = score_srl(examples)
    assert scores["srl_f"] == 1.0 and scores["srl_pred_f"] == 1.0 and scores["srl_sense_acc"] == 1.0


def test_frames_have_scores(trf_nlp):
    nlp, _ = trf_nlp
    doc = nlp("John gave Mary the book yesterday.")
    frames = get_frames(doc)
    assert frames and all(0.0 <= f.score <= 1.0 for f in frames)
    assert all(0.0 <= a.score <= 1.0 for f in frames for a in f.arguments)


def test_serialization_round_trip(trf_nlp, tmp_path, mini_corpus):
    nlp, _ = trf_nlp
    texts = [ref.text for ref in load_refs(mini_corpus)]
    before = [comparable(doc) for doc in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert loaded.get_pipe("srl").cfg["roles"] == nlp.get_pipe("srl").cfg["roles"]
    assert [comparable(doc) for doc in loaded.pipe(texts)] == before
    # and through bytes
    srl_bytes = nlp.get_pipe("srl").to_bytes()
    loaded.get_pipe("srl").from_bytes(srl_bytes)
    assert [comparable(doc) for doc in loaded.pipe(texts)] == before
    # frames written by the model survive DocBin
    docs = list(loaded.pipe(texts))
    again = list(DocBin(docs=docs).from_bytes(DocBin(docs=docs).to_bytes()).get_docs(loaded.vocab))
    assert [comparable(d) for d in again] == before


def test_pipe_multiprocessing(trf_nlp, mini_corpus):
    nlp, _ = trf_nlp
    texts = [ref.text for ref in load_refs(mini_corpus)] * 2
    single = [comparable(doc) for doc in nlp.pipe(texts)]
    multi = [comparable(doc) for doc in nlp.pipe(texts, n_process=2, batch_size=2)]
    assert multi == single


def test_empty_and_predicateless_docs(trf_nlp):
    nlp, _ = trf_nlp
    assert get_frames(nlp("")) == []
    docs = list(nlp.pipe(["", "!!!", "John gave Mary the book yesterday.", ""]))
    assert get_frames(docs[0]) == [] and get_frames(docs[3]) == []
    assert len(get_frames(docs[2])) >= 1
    assert all(len(doc.spans["srl_predicates"]) == len(get_frames(doc)) for doc in docs)


def test_long_document(trf_nlp):
    nlp, _ = trf_nlp
    text = " ".join(["John gave Mary the book yesterday."] * 3000)
    assert len(text) > 100_000
    doc = nlp(text)
    frames = get_frames(doc)
    assert len(frames) > 0
    # every argument stays inside its predicate's sentence
    for frame in frames:
        sent = doc[frame.head].sent
        assert all(sent.start <= a.span.start and a.span.end <= sent.end for a in frame.arguments)


def test_bounded_spans_never_overflow():
    from albert_srl.components.spans import bounded_strided_spans, piece_bound

    nlp = spacy.blank("en")
    doc = nlp("a " * 300 + "x" * 2000 + " b c " + "hello " * 50 + "y" * 400)
    spans = bounded_strided_spans(doc, window=128, stride=96, max_pieces=500)
    assert all(sum(piece_bound(t.text) for t in span) <= 500 for span in spans)
    assert all(len(span) <= 128 for span in spans)
    covered = {i for span in spans for i in range(span.start, span.end)}
    assert covered == set(range(len(doc))) - {300}  # only the 2000-character token is left out
    assert [(s.start, s.end) for s in spans][:3] == [(0, 128), (96, 224), (192, 300)]


def test_pathological_tokens(trf_nlp):
    nlp, _ = trf_nlp
    doc = nlp("Look: " + "x" * 3000 + " and " + "🙂" * 600 + " then John gave Mary the book.")
    assert len(doc) > 0  # no overflow of the encoder's positions


def test_gold_predicates_mode(trf_nlp, mini_corpus):
    nlp, _ = trf_nlp
    ref = load_refs(mini_corpus)[0]
    doc = nlp(gold_token_doc(nlp, ref, with_sents=True))
    # predicate spans added by hand, without frame keys
    doc.spans["srl_predicates"] = [doc[f.head : f.head + 1] for f in get_frames(ref)]
    nlp.get_pipe("srl").label_given_predicates([doc])
    assert comparable(doc) == comparable(ref)


def test_albert_token_alignment(tiny_albert):
    """Each spaCy token aligns to its own wordpieces only (ALBERT's fast tokenizer would misalign them)."""
    nlp = make_nlp("srl_trf.cfg", TRF_OVERRIDES, tiny_albert)
    nlp.initialize()
    doc = nlp.get_pipe("transformer")(nlp.make_doc("The cat sat on the mat with Mary."))
    align = doc._.trf_data.align
    pieces = [list(align[i].dataXd.ravel()) for i in range(len(doc))]
    flat = [p for token in pieces for p in token]
    assert all(pieces) and len(flat) == len(set(flat))  # every token has pieces, none shared
    assert flat == sorted(flat)


def test_evaluate_command(trf_nlp, mini_corpus, tmp_path):
    import json

    from typer.testing import CliRunner

    from albert_srl.pipeline.evaluate import app

    nlp, _ = trf_nlp
    nlp.to_disk(tmp_path / "model")
    result = CliRunner().invoke(
        app, [str(tmp_path / "model"), str(mini_corpus / "train.spacy"), str(tmp_path / "metrics" / "dev.json")]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "metrics" / "dev.json").read_text())
    assert scores["srl_f"] == 1.0 and scores["gold_predicates"]["f"] == 1.0 and scores["srl_sense_acc"] == 1.0
    assert scores["srl_per_role"]["ARG0"]["support"] == 3 and scores["by_genre"]["email"]["srl_f"] == 1.0
    gold = (tmp_path / "metrics" / "dev.gold.props").read_text()
    pred = (tmp_path / "metrics" / "dev.pred.props").read_text()
    assert gold == pred  # the overfit model reproduces the gold props exactly
    first = gold.split("\n")[1].split("\t")
    assert first[0] == "gave" and first[1] == "(V*)"
    bad = CliRunner().invoke(
        app, [str(tmp_path / "no-model"), str(mini_corpus / "train.spacy"), str(tmp_path / "x.json")]
    )
    assert bad.exit_code == 1 and "Cannot load the pipeline" in bad.output
    # extra options override the pipeline's config, and the metrics say so
    biased = CliRunner().invoke(
        app,
        [str(tmp_path / "model"), str(mini_corpus / "train.spacy"), str(tmp_path / "b.json")]
        + ["--components.srl.argument_o_bias", "2.5"],
    )
    assert biased.exit_code == 0, biased.output
    assert json.loads((tmp_path / "b.json").read_text())["overrides"] == {"components.srl.argument_o_bias": 2.5}


def test_argument_o_bias_marks_more_arguments(trf_nlp):
    """Taking a bias off O's log-probability before decoding can only add argument tokens."""
    nlp, _ = trf_nlp
    srl = nlp.get_pipe("srl")
    texts = ["John gave Mary the book yesterday.", "The man, he said, left.", "She didn't look it up."]

    def argument_tokens(bias: float) -> int:
        srl.argument_o_bias = bias
        return sum(len(a.span) for doc in nlp.pipe(texts) for f in doc._.srl_frames for a in f.arguments)

    try:
        counts = [argument_tokens(bias) for bias in (0.0, 3.0, 30.0)]
    finally:
        srl.argument_o_bias = 0.0
    assert counts[0] <= counts[1] <= counts[2] and counts[0] < counts[2]


@pytest.mark.parametrize("name", ["srl_trf.cfg", "srl_trf_gpu.cfg", "srl_cnn.cfg"])
def test_configs_are_valid(name):
    from spacy.util import registry

    config = load_config(REPO / "configs" / name, interpolate=True)
    filled = registry.fill(config, validate=True)  # architectures and readers resolve by name
    assert filled["nlp"]["pipeline"][-2:] == ["senter", "srl"]
    assert filled["components"]["srl"]["factory"] == "srl"
    if "transformer" in filled["components"]:
        assert filled["components"]["transformer"]["model"]["tokenizer_config"] == {"use_fast": False}


def test_prediction_bilstm_equals_the_packed_one():
    """CPUs run the BiLSTM on padded rows (faster there); it must give the packed numbers and gradients."""
    import torch

    from albert_srl.components.model import SRLHead

    torch.manual_seed(0)
    head = SRLHead(32, 16, 5, 3, 7, lstm_depth=1, max_distance=8, dropout=0.1)
    pairs = torch.randn(6, 11, 16)
    lengths = torch.tensor([11, 1, 5, 7, 11, 3])
    packed = head.packed_context(pairs, lengths)
    for mode in (head.eval, head.train):  # CPUs run padded rows in training too
        mode()
        unpacked = head.context(pairs, lengths)
        torch.testing.assert_close(unpacked, packed, atol=1e-6, rtol=1e-5)
        assert not unpacked[1, 1:].any() and not unpacked[5, 3:].any()  # zeros at padding
    # and the same gradients, for the weights and for the inputs
    weights = [head.lstm.weight_ih_l0, head.lstm.weight_hh_l0_reverse]
    gradients = []
    for context in (head.packed_context, head.padded_context):
        x = pairs.clone().requires_grad_(True)
        gradients.append(torch.autograd.grad((context(x, lengths) ** 2).sum(), [x, *weights]))
    for padded_gradient, packed_gradient in zip(gradients[1], gradients[0]):
        torch.testing.assert_close(padded_gradient, packed_gradient, atol=1e-5, rtol=1e-4)


def test_bf16_bilstm_stays_close_to_fp32():
    """`cpu_bf16_lstm` runs the prediction BiLSTM under bf16 autocast: fp32 out, zeros at padding,
    within bf16's precision of the fp32 numbers."""
    import torch

    from albert_srl.components.model import SRLHead
    from albert_srl.components.transformer import cpu_bf16_supported

    if not cpu_bf16_supported():
        # oneDNN has no bf16 LSTM for such CPUs ("could not create a primitive descriptor"); the
        # pipe only switches the option on where the CPU has bf16
        pytest.skip("this CPU has no AVX512-BF16 or AMX: the bf16 BiLSTM does not run")

    torch.manual_seed(0)
    head = SRLHead(32, 16, 5, 3, 7, lstm_depth=1, max_distance=8, dropout=0.1).eval()
    pairs = torch.randn(6, 11, 16)
    lengths = torch.tensor([11, 1, 5, 7, 11, 3])
    full = head.context(pairs, lengths)
    head.cpu_bf16_lstm = True
    half = head.context(pairs, lengths)
    assert half.dtype == torch.float32
    assert not half[1, 1:].any() and not half[5, 3:].any()
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.05)
    assert not torch.equal(half, full)  # it did run in bf16


def test_srl_cpu_bf16_setting_reaches_the_head(tiny_pipeline, mini_corpus):
    """The factory's `cpu_bf16` switches the BiLSTM's precision only where the CPU has bf16, and
    the frames it finds are the fp32 ones on the tiny pipeline."""
    import spacy

    from albert_srl.components.transformer import cpu_bf16_supported

    texts = [doc.text for doc in load_refs(mini_corpus)]
    pipelines = {flag: spacy.load(tiny_pipeline, config={"components.srl.cpu_bf16": flag}) for flag in (False, True)}
    assert pipelines[True].get_pipe("srl").cpu_bf16_lstm == cpu_bf16_supported()
    assert pipelines[False].get_pipe("srl").cpu_bf16_lstm is False
    frames = {flag: [comparable(doc) for doc in nlp.pipe(texts)] for flag, nlp in pipelines.items()}
    assert any(frames[False]) and frames[True] == frames[False]


@pytest.mark.parametrize("pair_width", [None, 8])
def test_argument_scores_do_not_depend_on_chunking(pair_width):
    """Prediction scores predicates in chunks from per-token terms computed once; each predicate's
    logits must be those of scoring it alone, for both pair layouts (v1: hidden width, v2: pair_width)."""
    import torch

    from albert_srl.components.model import SRLHead

    torch.manual_seed(0)
    head = SRLHead(32, 16, 5, 3, 7, lstm_depth=1, max_distance=4, dropout=0.1, pair_width=pair_width).eval()
    assert head.lstm.hidden_size == (pair_width or 16) // 2
    H = head.encode(torch.randn(40, 32))
    heads, starts, lengths = torch.tensor([3, 12, 30, 35]), torch.tensor([0, 10, 25, 25]), torch.tensor([9, 6, 15, 15])
    with torch.no_grad():
        together = head.arguments(H, heads, starts, lengths, head.token_terms(H))
        for k in range(len(heads)):
            alone = head.arguments(H, heads[k : k + 1], starts[k : k + 1], lengths[k : k + 1])
            torch.testing.assert_close(together[k, : lengths[k]], alone[0], atol=1e-5, rtol=1e-5)
    assert together.shape == (4, 15, 7)
    # the predicate shapes the scores: the same tokens with another predicate score differently
    assert not torch.allclose(together[2], together[3])


def test_training_loss_does_not_depend_on_chunking(trf_nlp, mini_corpus, monkeypatch):
    """Training sums the argument loss over length-sorted chunks of predicates; the loss and its
    gradient must be those of every window padded to the longest in one pass."""
    import torch

    nlp = trf_nlp[0]
    srl = nlp.get_pipe("srl")
    examples = [Example(gold_token_doc(nlp, ref), ref) for ref in load_refs(mini_corpus)]
    tokvecs = srl.model.predict([eg.predicted for eg in examples])
    targets = srl._targets(examples)
    module = head_module(srl.model)
    module.train()  # the training path (packed BiLSTM), without dropout so both passes see the same numbers
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0

    def loss_and_gradient(chunk_pairs: int, chunk_min_rows: int):
        monkeypatch.setattr(srl, "chunk_pairs", chunk_pairs)
        monkeypatch.setattr(srl, "chunk_min_rows", chunk_min_rows)
        X = srl._token_matrix(tokvecs, requires_grad=True)
        loss, parts = srl._loss(module.encode(X), targets)
        loss.backward()
        return loss.detach(), parts["arguments"], X.grad

    lengths = numpy.asarray([end - start for start, end in targets[3]])
    monkeypatch.setattr(srl, "chunk_pairs", 16)
    assert len(srl._length_sorted_chunks(lengths)) > 3
    padded = loss_and_gradient(10**9, 10**9)
    chunked = loss_and_gradient(16, 1)
    module.eval()
    assert padded[1] > 0
    torch.testing.assert_close(chunked[0], padded[0])
    torch.testing.assert_close(chunked[2], padded[2])


def test_chunks_cover_every_predicate_bounded_in_size_and_padding(trf_nlp):
    """Predicates are scored in chunks of similar window length: each exactly once, no chunk over
    `chunk_pairs` padded pairs, and none padded past `chunk_padding` once it holds `chunk_min_rows`
    predicates (a mix of short windows no longer pads them all to the longest)."""
    import numpy

    srl = trf_nlp[0].get_pipe("srl")
    rng = numpy.random.default_rng(0)
    lengths = numpy.concatenate([rng.integers(1, 17, 400), rng.integers(17, 129, 300)])
    chunks = srl._length_sorted_chunks(lengths)
    assert sorted(numpy.concatenate(chunks).tolist()) == list(range(len(lengths)))
    for chunk in chunks:
        padded = len(chunk) * lengths[chunk].max()
        assert padded <= srl.chunk_pairs or len(chunk) == 1
        if len(chunk) > srl.chunk_min_rows:
            assert 1 - lengths[chunk].sum() / padded <= srl.chunk_padding + 1e-9 or len(chunk) == 1
    padded = sum(len(c) * lengths[c].max() for c in chunks)
    assert padded < 1.15 * lengths.sum()  # the length cut alone padded this mix to 1.5x


def test_sense_candidates_equal_the_full_logits():
    """Prediction scores only the rolesets seen with each word form; those scores must be the full
    output layer's logits at the same places."""
    import torch

    from albert_srl.components.model import SRLHead

    torch.manual_seed(0)
    head = SRLHead(32, 16, 5, 50, 7, lstm_depth=1, max_distance=4, dropout=0.1).eval()
    H = head.encode(torch.randn(20, 32))
    heads = torch.tensor([2, 7, 11])
    rows, senses = torch.tensor([0, 0, 2, 2, 2]), torch.tensor([4, 17, 0, 49, 3])
    with torch.no_grad():
        full = head.senses(H, heads)
        torch.testing.assert_close(
            head.sense_candidates(H, heads, rows, senses), full[rows, senses], atol=1e-5, rtol=1e-5
        )
        assert head.sense_candidates(H, heads, rows[:0], senses[:0]).shape == (0,)


def test_sense_choice_among_the_lexicon_candidates(trf_nlp, monkeypatch):
    """The chosen roleset is the best-scoring of the form's candidates, ties going to the lexicon's
    first (most frequent); a form the lexicon lacks gets `<form>.01`."""
    import numpy

    nlp, _ = trf_nlp
    srl = nlp.get_pipe("srl")
    assert len(srl.senses) >= 2
    first, second = srl.senses[1], srl.senses[0]
    monkeypatch.setitem(srl.cfg["lexicon"], "twoform", [first, second])
    candidates = srl._sense_candidates(["twoform", "unseenform", "twoform"])
    rows, senses, starts = candidates
    assert rows.tolist() == [0, 0, 2, 2] and starts.tolist() == [0, 2, 2, 4]
    assert [srl.senses[i] for i in senses] == [first, second, first, second]
    scores = numpy.zeros(len(rows), dtype="float32")
    assert srl._choose_sense("twoform", candidates, scores, 0) == first  # a tie
    assert srl._choose_sense("unseenform", candidates, scores, 1) == "unseenform.01"
    scores[3] = 1.0
    assert srl._choose_sense("twoform", candidates, scores, 2) == second


def gpu_unavailable() -> str:
    """Why the GPU test cannot run here ('' if it can)."""
    import torch
    from thinc.util import has_cupy_gpu

    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return "" if has_cupy_gpu else "CuPy is not installed: spaCy runs on GPUs through it"


@pytest.mark.skipif(bool(gpu_unavailable()), reason=gpu_unavailable() or "GPU present")
def test_overfitting_transformer_on_gpu(mini_corpus, tiny_albert):
    """Trained and run on a GPU, the pipe learns the fixture as on the CPU: its index and target
    tensors follow the head there (the CPU suite cannot see a tensor left on the wrong device)."""
    spacy.require_gpu(0)
    try:
        nlp = make_nlp("srl_trf.cfg", TRF_OVERRIDES, tiny_albert)
        refs = load_refs(mini_corpus)
        losses = train(nlp, refs, steps=300)
        head = head_module(nlp.get_pipe("srl").model)
        assert next(head.parameters()).is_cuda
        assert losses["srl"] < 0.05
        for ref in refs:
            assert comparable(nlp(gold_token_doc(nlp, ref))) == comparable(ref)
    finally:
        spacy.require_cpu()
