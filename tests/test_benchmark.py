"""The benchmark's pipeline variants (its timings are never asserted: they live in metrics/)."""

import json

import pytest
from common import REPO
from spacy.tokens import Doc
from typer.testing import CliRunner

from albert_srl.components.transformer import cpu_bf16_supported
from albert_srl.pipeline.benchmark import app
from albert_srl.pipeline.benchmark.options import SPEED_OPTIONS, load_with_option


def test_no_overlap_option_encodes_each_token_once(tiny_pipeline):
    trained = load_with_option(str(tiny_pipeline), "fp32")
    flat = load_with_option(str(tiny_pipeline), "no-overlap")
    doc = Doc(flat.vocab, words=["a"] * 300)  # short words: no window is shortened for its wordpieces
    overlapping = trained.get_pipe("transformer").model.attrs["get_spans"]([doc])[0]
    windows = flat.get_pipe("transformer").model.attrs["get_spans"]([doc])[0]
    assert sum(len(w) for w in overlapping) > len(doc)  # the trained config's windows overlap
    assert [(w.start, w.end) for w in windows] == [(0, 128), (128, 256), (256, 300)]


@pytest.mark.parametrize("option", [o for o in SPEED_OPTIONS if o not in ("bf16", "bf16-lstm") or cpu_bf16_supported()])
def test_speed_options_keep_the_frames_format(tiny_pipeline, option):
    nlp = load_with_option(str(tiny_pipeline), option)
    doc = nlp("John gave Mary the book yesterday.")
    assert "srl_predicates" in doc.spans and "srl_arguments" in doc.spans


def test_options_run_on_a_baseline_without_buckets(tiny_pipeline):
    """Each option is measured against plain padded batches; length-buckets is the only one with groups."""
    for option in ("fp32", "int8", "no-overlap", "length-sorted", "length-buckets"):
        nlp = load_with_option(str(tiny_pipeline), option)
        config = nlp.config["components"]["transformer"]["model"]
        assert config["bucket_tokens"] == (1024 if option == "length-buckets" else 0)
        assert config["cpu_int8"] == (option == "int8") and not config["cpu_bf16"]
        assert nlp.config["components"]["srl"]["cpu_bf16"] is False


@pytest.mark.skipif(cpu_bf16_supported(), reason="checks the error on a CPU without bf16; this one has it")
def test_bf16_lstm_option_says_when_the_cpu_lacks_bf16(tiny_pipeline):
    with pytest.raises(RuntimeError, match="no bf16 support"):
        load_with_option(str(tiny_pipeline), "bf16-lstm")


def test_bf16_lstm_option_keeps_the_encoder_in_fp32(tiny_pipeline):
    if not cpu_bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16 or AMX: the option does not run")
    nlp = load_with_option(str(tiny_pipeline), "bf16-lstm")
    assert nlp.get_pipe("srl").cpu_bf16_lstm and not nlp.config["components"]["transformer"]["model"]["cpu_bf16"]


@pytest.mark.parametrize("precision,mixed,bf16", [("fp32", False, False), ("fp16", True, False), ("bf16", True, True)])
def test_gpu_precisions_build_the_cuda_autocast_they_name(tiny_pipeline, precision, mixed, bf16):
    """On a GPU, fp16 is spacy-transformers' mixed precision and bf16 the same with bf16 autocast;
    the CPU options stay off. Built on the CPU: the wrappers only act on a GPU."""
    from albert_srl.components.transformer import gpu_precision
    from albert_srl.pipeline.benchmark.pipelines import load_pipeline

    nlp = load_pipeline(str(tiny_pipeline), precision, on_gpu=True)
    config = nlp.config["components"]["transformer"]["model"]
    assert (config["mixed_precision"], config["gpu_bf16"], config["cpu_bf16"], config["cpu_int8"]) == (
        mixed,
        bf16,
        False,
        False,
    )
    assert gpu_precision(nlp.get_pipe("transformer").model) == precision


def test_precisions_are_checked_for_the_device(tiny_pipeline):
    from albert_srl.pipeline.benchmark.pipelines import load_pipeline

    with pytest.raises(ValueError, match="on a GPU must be one of as-trained, fp32, bf16, fp16, not 'int8'"):
        load_pipeline(str(tiny_pipeline), "int8", on_gpu=True)
    with pytest.raises(ValueError, match="on the CPU must be one of .*, not 'fp16'"):
        load_pipeline(str(tiny_pipeline), "fp16")


def test_gpu_id_without_a_gpu_fails_at_once_saying_why(tiny_pipeline, mini_corpus, tmp_path):
    """Every benchmark command takes --gpu-id; without a usable GPU it stops before any child runs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    dev = str(mini_corpus / "dev.spacy")
    for command in (
        ["floor", str(tiny_pipeline), dev],
        ["per-predicate", str(tiny_pipeline), dev],
        ["trf-reference", dev],
    ):
        result = CliRunner().invoke(app, [*command, str(tmp_path / "out.json"), "--gpu-id", "0"])
        assert result.exit_code == 1, result.output
        assert "--gpu-id 0: PyTorch sees no CUDA GPU" in result.output and "Leave out --gpu-id" in result.output
    assert not (tmp_path / "out.json").exists()
    result = CliRunner().invoke(
        app, ["floor", str(tiny_pipeline), dev, str(tmp_path / "out.json"), "--precision", "fp16"]
    )
    assert result.exit_code == 1 and "not 'fp16' (fp16 is a GPU precision: add --gpu-id)" in result.output


def test_floor_ratio_is_the_median_round_and_the_pass_is_broken_down(tiny_pipeline, mini_corpus, tmp_path):
    """The in-turn floor times both passes in every round, alternating their order, and reports the
    median round's ratio; the breakdown names every step of the pipeline."""

    out = tmp_path / "floor.json"
    result = CliRunner().invoke(
        app,
        [
            "floor-interleaved-child",
            str(tiny_pipeline),
            str(mini_corpus / "dev.spacy"),
            str(out),
            "--repeats",
            "3",
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    floor = json.loads(out.read_text())
    assert [list(r) for r in floor["rounds"]] == [
        ["transformer alone", "whole pipeline"],
        ["whole pipeline", "transformer alone"],
        ["transformer alone", "whole pipeline"],
    ]
    ratios = [r["transformer alone"] / r["whole pipeline"] for r in floor["rounds"]]
    assert floor["round_ratios"] == sorted(ratios) and floor["pipeline_vs_transformer"] == sorted(ratios)[1]
    assert list(floor["component_seconds"]) == ["tokenizer", "transformer", "senter", "srl"]
    assert all(seconds > 0 for seconds in floor["component_seconds"].values())
    assert floor["words"] > 0


def test_floor_with_gold_structure_encodes_the_same_docs_on_both_sides(tiny_pipeline, mini_corpus, tmp_path):
    """With --gold-structure the transformer alone and the whole pipeline both run on the corpus's own
    tokens, so the SRL head is all that differs; the breakdown gives the two steps' seconds."""

    out = tmp_path / "floor.json"
    result = CliRunner().invoke(
        app,
        [
            "floor-interleaved-child",
            str(tiny_pipeline),
            str(mini_corpus / "dev.spacy"),
            str(out),
            "--repeats",
            "2",
            "--precision",
            "fp32",
            "--gold-structure",
        ],
    )
    assert result.exit_code == 0, result.output
    floor = json.loads(out.read_text())
    assert floor["gold_structure"] and list(floor["component_seconds"]) == ["transformer", "srl"]
    assert all(seconds > 0 for seconds in floor["component_seconds"].values())
    for only, components in (("transformer", ["transformer"]), ("", ["transformer", "srl"])):
        child = tmp_path / f"child-{only or 'whole'}.json"
        result = CliRunner().invoke(
            app,
            [
                "floor-child",
                str(tiny_pipeline),
                str(mini_corpus / "dev.spacy"),
                str(child),
                "--only",
                only,
                "--precision",
                "fp32",
                "--repeats",
                "1",
                "--gold-structure",
            ],
        )
        assert result.exit_code == 0, result.output
        measured = json.loads(child.read_text())
        assert measured["components"] == components and measured["words"] == floor["words"]
        assert (measured["predicates"] > 0) == (only == "")


def test_trf_reference_in_turn_rotates_the_order_and_takes_each_rounds_ratio(tiny_pipeline, mini_corpus, tmp_path):
    """Every pipeline and the roberta-base reference are timed in each round, the order rotating, and
    each pipeline's ratio to the reference is its words/s over the reference's within one round."""
    import shutil
    import statistics

    from albert_srl.pipeline.benchmark.trf_reference import REFERENCE

    gold_structure = tmp_path / "gold-structure-copy"
    shutil.copytree(tiny_pipeline, gold_structure)
    out = tmp_path / "in-turn.json"
    args = [
        "trf-reference-interleaved-child",
        str(mini_corpus / "dev.spacy"),
        str(out),
        "--model",
        str(tiny_pipeline),
        "--gold-structure-model",
        str(gold_structure),
        "--rounds",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    in_turn = json.loads(out.read_text())
    names = [REFERENCE, str(tiny_pipeline), str(gold_structure)]
    assert [list(r) for r in in_turn["rounds"]] == [names, names[1:] + names[:1], names[2:] + names[:2]]
    words = in_turn["words"]
    assert set(words) == set(names) and all(n > 0 for n in words.values())
    for name in names[1:]:
        ratios = sorted((words[name] / r[name]) / (words[REFERENCE] / r[REFERENCE]) for r in in_turn["rounds"])
        summary = in_turn["vs_reference"][name]
        assert summary["round_ratios"] == pytest.approx(ratios)
        assert (summary["median"], summary["low"], summary["high"]) == pytest.approx(
            (statistics.median(ratios), ratios[0], ratios[-1])
        )


def test_per_predicate_speedup_is_the_median_round(tiny_pipeline, mini_corpus, tmp_path):
    """Both designs are timed in every round, their order alternating, and the speedup reported is
    the median round's ratio of seconds (both count the pipeline's words)."""
    import statistics

    out = tmp_path / "per-predicate.json"
    result = CliRunner().invoke(
        app,
        [
            "per-predicate-interleaved-child",
            str(tiny_pipeline),
            str(mini_corpus / "dev.spacy"),
            str(out),
            "--rounds",
            "3",
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())
    assert [list(r) for r in measured["rounds"]] == [
        ["this pipeline", "per-predicate"],
        ["per-predicate", "this pipeline"],
        ["this pipeline", "per-predicate"],
    ]
    speedups = sorted(r["per-predicate"] / r["this pipeline"] for r in measured["rounds"])
    assert measured["round_speedups"] == pytest.approx(speedups) and measured["speedup"] == pytest.approx(
        statistics.median(speedups)
    )
    assert measured["sequences"] > 0 and measured["words"] > 0


def test_per_predicate_with_gold_structure_times_the_head_on_gold_predicates(
    tiny_pipeline, mini_corpus, tmp_path, monkeypatch
):
    """With --gold-structure this pipeline's side is the transformer and the SRL head on the corpus's
    own sentences and predicates (what the per-predicate side is given), not nlp.pipe."""

    from albert_srl.pipeline.benchmark import per_predicate

    passes = []

    def counted(nlp, refs, *args, **kwargs):
        run = gold_structure_run(nlp, refs, *args, **kwargs)

        def counted_run():
            passes.append(len(refs))
            return run()

        return counted_run

    gold_structure_run = per_predicate.gold_structure_run
    monkeypatch.setattr(per_predicate, "gold_structure_run", counted)
    monkeypatch.setattr("spacy.language.Language.pipe", lambda *args, **kwargs: pytest.fail("nlp.pipe ran"))
    out = tmp_path / "per-predicate.json"
    args = [
        "per-predicate-interleaved-child",
        str(tiny_pipeline),
        str(mini_corpus / "dev.spacy"),
        str(out),
        "--rounds",
        "2",
        "--precision",
        "fp32",
        "--gold-structure",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())
    n_docs = passes[-1]  # a warm-up on the first 8 documents, then one pass a round
    assert measured["gold_structure"] and passes == [min(8, n_docs), n_docs, n_docs]
    assert len(measured["round_speedups"]) == 2


def test_random_pipeline_asks_for_an_encoder_or_a_vocabulary(mini_corpus, tmp_path):

    result = CliRunner().invoke(
        app, ["random-pipeline", "configs/srl_trf_gpu.cfg", str(mini_corpus / "dev.spacy"), str(tmp_path / "pipe")]
    )
    assert result.exit_code == 1 and "Give --spm" in result.output and "--encoder" in result.output
    assert not (tmp_path / "pipe").exists()


def test_per_predicate_passes_run_the_encoder_in_eval_mode_after_a_pipeline_pass(tiny_pipeline, mini_corpus):
    """thinc puts a PyTorch model back in train mode after predicting: a pipeline pass between two
    per-predicate passes must not leave them running dropout."""
    from spacy.tokens import DocBin

    from albert_srl.pipeline.benchmark.per_predicate import per_predicate_pass
    from albert_srl.pipeline.benchmark.pipelines import load_pipeline

    nlp = load_pipeline(str(tiny_pipeline), "fp32")
    refs = list(DocBin().from_disk(mini_corpus / "dev.spacy").get_docs(nlp.vocab))
    encode_all, _, sequences = per_predicate_pass(nlp, refs)
    encoder = nlp.get_pipe("transformer").model.transformer
    list(nlp.pipe([ref.text for ref in refs]))
    assert encoder.training  # what thinc leaves behind
    modes = []
    hook = encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    encode_all()
    hook.remove()
    assert len(modes) == -(-sequences // 32) and not any(modes)


def test_reports_write_a_markdown_table_under_a_header_naming_machine_and_pipeline(tiny_pipeline, tmp_path):
    """Each benchmark's JSON gets a Markdown table beside it, headed by the date, the machine and the
    pipeline's encoder and SRL head settings (read from its config)."""

    from albert_srl.pipeline.benchmark.machine import machine
    from albert_srl.pipeline.benchmark.reports import write_report

    out = tmp_path / "bench.json"
    write_report(
        out,
        {"machine": machine(), "model": str(tiny_pipeline), "corpus": "dev.spacy", "precision": "fp32"},
        [("whole pipeline", "1,000", "2,000")],
        ("run", "words", "words/s"),
        findings=["ratio 0.8"],
    )
    saved = json.loads(out.read_text())
    summary = saved["pipelines"][str(tiny_pipeline)]
    assert summary["components"][0] == "transformer" and summary["components"][-1] == "srl"
    assert summary["srl"]["@architectures"].startswith("albert_srl.SRLModel")
    lines = out.with_suffix(".md").read_text().splitlines()
    assert lines[0] == "# bench" and lines[2].startswith("- date: ") and lines[3].startswith("- machine: cpu ")
    assert "- precision: fp32" in lines and "- corpus: dev.spacy" in lines
    pipeline_line = next(line for line in lines if line.startswith(f"- pipeline `{tiny_pipeline}`"))
    assert "srl: @architectures albert_srl.SRLModel" in pipeline_line and "transformer: @architectures" in pipeline_line
    assert lines[-5:] == [
        "| run | words | words/s |",
        "|---|---:|---:|",
        "| whole pipeline | 1,000 | 2,000 |",
        "",
        "ratio 0.8",
    ]


@pytest.mark.parametrize(
    "config,options",
    [
        ("srl_trf.cfg", []),
        # the syntax pipes: spaCy's parser is a Cython class, timed through a stand-in
        ("srl_trf_syntax.cfg", ["--components.parser.min_action_freq=1"]),
    ],
)
def test_train_speed_breaks_a_step_into_parts(config, options, mini_corpus, tiny_albert, tmp_path):
    """`train-speed` trains the config for a few steps and accounts for every second of them."""
    output = tmp_path / "train-speed.json"
    args = [
        "train-speed", str(REPO / "configs" / config), str(output), "--steps", "4", "--warmup", "1",
        f"--paths.train={mini_corpus / 'train.spacy'}", f"--paths.dev={mini_corpus / 'dev.spacy'}",
        f"--paths.encoder={tiny_albert}", "--components.srl.model.hidden_width=64",
        "--components.transformer.model.cpu_bf16=false", *options,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    parts = report["seconds_per_step"]
    assert report["words"] > 0 and report["words_per_s"] > 0
    assert parts["transformer forward"] > 0 and parts["transformer backward"] > 0 and parts["srl head forward"] > 0
    if "syntax" in config:
        assert parts["parser"] > 0 and parts["morphologizer"] > 0 and "optimizer: parser" in parts
    assert abs(sum(parts.values()) * report["steps"] - report["seconds"]) < 1e-6
    assert "trained words/s" in output.with_suffix(".md").read_text()
