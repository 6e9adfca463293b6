"""The ``tenni`` command line: each command is a thin wrapper over the public Python API.

Start-up stays light: torch, transformers and scikit-learn are imported inside the commands that need them.
Errors the user can fix print one line and exit with code 2; Ctrl-C exits with 130 and SIGTERM with 143, each
after one line saying what was saved and how to resume.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ._deadline import parse_duration
from .errors import ConfigError, TenniError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="tenni (転移): adapt a pretrained model to your small labeled dataset, and measure the gain.")
out = Console()
err = Console(stderr=True)


def _output_file(path: Path | None, suffixes: tuple[str, ...], option: str = "-o") -> None:
    """Refuse, before any work, an output that is a folder or whose extension names a format not written."""
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; {option} takes a file name",
                          hint=f"e.g. {option} {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"cannot write '{path.suffix or path.name}' files: {option} takes {' or '.join(suffixes)}",
                          hint=f"e.g. {option} {path.with_suffix(suffixes[0])}")


_interrupt_note = "nothing was written"


def _on_interrupt(note: str) -> None:
    """What the one line printed on Ctrl-C or SIGTERM says about the command running: what was saved, how to
    resume."""
    global _interrupt_note
    _interrupt_note = note


def _max_pixels():
    return typer.Option(None, "--max-pixels", help="Images: refuse larger ones (width x height) [89478485].")


def _max_audio_seconds():
    return typer.Option(None, "--max-audio-seconds", help="Audio: refuse longer recordings [1200].")


def _limits(max_pixels: int | None, max_audio_seconds: float | None) -> None:
    from ._limits import set_media_limits

    set_media_limits(max_pixels, max_audio_seconds)


def _parse_set(values: list[str] | None) -> dict | None:
    if not values:
        return None
    config = {}
    for item in values:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--set '{item}' is not KEY=VALUE", hint="e.g. --set epochs=5")
        key, value = item.split("=", 1)
        config[key.strip()] = value.strip()
    return config


@app.command()
def fit(
    data: Path = typer.Argument(..., help="Labeled data: CSV, TSV, JSONL, Parquet, or a folder of class folders "
                                          "(texts, images or audio; optional train/ and test/ levels)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Directory to save the model in."),
    test: Path | None = typer.Option(None, "--test", help="Separate labeled test file (else a hold-out split)."),
    strategy: str | None = typer.Option(None, "--strategy", "-s", show_default=False,
                                        help="auto, probe, hybrid, setfit, lora, finetune or scratch "
                                             "[default: auto, a budgeted race of the others; for images "
                                             "and audio, probe]"),
    budget: str | None = typer.Option(None, "--budget", help="Time for --strategy auto, e.g. 90s, 5m [2m]."),
    backbone: str = typer.Option("auto", "--backbone", "-b",
                                 help="auto (by the data's language), a registered name (`tenni models`), "
                                      "a local folder, or a hub id."),
    seed: int = typer.Option(0, "--seed", help="Random seed (split, sampling, training)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline",
                                  help="Also fit the from-scratch baseline on the same split."),
    test_size: float = typer.Option(0.2, "--test-size", help="Hold-out share when no --test is given."),
    evaluation: str = typer.Option("auto", "--evaluation",
                                   help="Without --test: cv (repeated stratified CV), holdout, or auto "
                                        "(cv for probe/hybrid/scratch, holdout for the others)."),
    text_col: str | None = typer.Option(None, "--text-col", help="Column holding the text."),
    label_col: str | None = typer.Option(None, "--label-col", help="Column holding the label."),
    encoding: str = typer.Option("auto", "--encoding",
                                 help="Text encoding: auto (UTF-8, UTF-16 with BOM, Shift_JIS/CP932) or a codec."),
    set_: list[str] | None = typer.Option(None, "--set", help="Strategy option KEY=VALUE (repeatable)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files",
                                        help="Images/audio: leave out corrupt, empty or silent files (counted) "
                                             "instead of stopping."),
    task: str = typer.Option("classify", "--task",
                             help="classify; anomaly: fit on normal images only, flag defects; generate: "
                                  "text-to-text (input/output columns) with a causal LM (prompt, lora, qlora)."),
    unlabeled: Path | None = typer.Option(None, "--unlabeled",
                                          help="Unlabeled pool of the same kind for self-training (a .txt file, "
                                               "a CSV/JSONL/Parquet column, or a folder)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Self-training rounds [2]."),
    pool_engine: str = typer.Option("local", "--pool-engine",
                                    help="Who encodes or labels the --unlabeled pool: local (this process), or ray "
                                         "(resumable jobs on a Ray actor pool, for pools too slow to label here)."),
    address: str | None = typer.Option(None, "--address", help="--pool-engine ray: a running cluster (auto or "
                                                               "HOST:PORT); default: a local Ray on 127.0.0.1."),
    actors: int | None = typer.Option(None, "--actors", help="--pool-engine ray: actors in the pool."),
    student: str | None = typer.Option(None, "--student",
                                       help="Also distil a faster model on the pool: probe, small (the backbone cut "
                                            "to one layer, fine-tuned) or scratch (TF-IDF); saved to "
                                            "OUTPUT-student."),
    instruction: str | None = typer.Option(None, "--instruction",
                                           help="--task generate: text put before every input."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
    labels: str | None = typer.Option(None, "--labels",
                                      help="Label names, comma-separated, for DATA without labels: a zero-shot "
                                           "model (e.g. \"World,Sports,Business,Sci/Tech\")."),
    label_descriptions: Path | None = typer.Option(None, "--label-descriptions",
                                                   help="JSON: label -> description (or list of them), used "
                                                        "instead of the names for zero-shot."),
    label_names: bool = typer.Option(True, "--label-names/--no-label-names",
                                     help="auto: use label names that are words as a zero-shot prior."),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="Train data-parallel on N processes (finetune, lora, setfit; --task "
                                       "generate: lora, qlora): relaunches this command with torch.distributed.run; "
                                       "gloo on CPU, NCCL on GPUs."),
    device: str | None = typer.Option(None, "--device", help="Where training runs: cpu, cuda or auto [cpu]."),
    precision: str | None = typer.Option(None, "--precision",
                                         help="Mixed precision for training: no, bf16, fp16 or auto (bf16 on GPUs "
                                              "that have it) [auto]."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue an interrupted run from the checkpoints in OUTPUT.partial "
                                     "(finetune, lora, setfit and --task generate keep them)."),
):
    """Fit a model on DATA and compare it with training from scratch."""
    from . import api
    from ._context import temporary_env
    from .distributed.launch import check_parallel_fit, in_launched_run, relaunch

    if resume and output is None:
        raise ConfigError("--resume continues from the checkpoints kept beside the output folder",
                          hint="add -o DIR (the same as in the interrupted run)")
    checkpoints = output.parent / f"{output.name}.partial" if output is not None else None
    generate = task == "generate"
    if instruction is not None and not generate:
        raise ConfigError("--instruction is for --task generate", hint="add --task generate, or drop --instruction")
    pooled = [name for name, given in (("--unlabeled", unlabeled is not None), ("--rounds", rounds is not None),
                                       ("--student", student is not None)) if given]
    if generate and pooled:
        raise ConfigError(f"{', '.join(pooled)} do(es) not apply to --task generate (self-training is for "
                          "classifiers)", hint=f"drop {', '.join(pooled)}")
    if not generate:
        _limits(max_pixels, max_audio_seconds)
    if output is not None and not generate:  # a folder that cannot take the model is refused now, not after training
        from .artifacts import check_model_target

        check_model_target(output)
        if student is not None:
            check_model_target(output.parent / f"{output.name}-student")
    settings = {k: v for k, v in (("TENNI_DEVICE", device), ("TENNI_PRECISION", precision)) if v}
    if pool_engine != "local" and (unlabeled is None or processes > 1):  # before Ray is imported or started
        raise ConfigError("--pool-engine labels an --unlabeled pool in a single-process fit",
                          hint="add --unlabeled POOL" if unlabeled is None else "drop --processes")
    if processes > 1 and not in_launched_run():
        check_parallel_fit(strategy, budget, task)
        with temporary_env(**settings):
            code = relaunch(processes, sys.argv[1:])
        if code:
            sys.exit(code)
        return
    main_process = True
    if in_launched_run():
        check_parallel_fit(strategy, budget, task)
        main_process = os.environ.get("RANK", "0") == "0"
        if not main_process:  # the other ranks train in step, silently; the main one prints and saves
            from ._logging import set_quiet

            set_quiet(True)
            settings["TENNI_NO_PROGRESS"] = "1"
    if generate:
        with temporary_env(**settings):
            _fit_generate(data, output=output, test=test, strategy=strategy, backbone=backbone,
                          config=_parse_set(set_), seed=seed, baseline=baseline, test_size=test_size,
                          input_col=text_col, output_col=label_col, encoding=encoding, instruction=instruction,
                          json_out=json_out, checkpoints=checkpoints, resume=resume, main_process=main_process)
        return
    _on_interrupt(f"no model was saved{f' to {output}' if output else ''}, and nothing there was changed; features "
                  "encoded so far are cached, so running the same command again resumes from there"
                  + (f"; training keeps a checkpoint per epoch in {checkpoints}: add --resume to continue from it"
                     if checkpoints is not None else ""))
    with temporary_env(**settings):
        model = api.fit(data, test=test, strategy=strategy, backbone=backbone, config=_parse_set(set_), seed=seed,
                        baseline=baseline, test_size=test_size, text_col=text_col, label_col=label_col,
                        encoding=encoding, budget=parse_duration(budget) if budget else None,
                        evaluation=evaluation, skip_bad_files=skip_bad_files, task=task, unlabeled=unlabeled,
                        rounds=rounds, student=student, labels=labels, label_descriptions=label_descriptions,
                        label_names=label_names, checkpoint_dir=checkpoints, resume=resume,
                        pool_labeler=_pool_labeler(pool_engine, address, actors))
    if not main_process:
        return
    if output is not None:
        from ._checkpoints import remove

        _on_interrupt(f"the model in {output} is either the new one, complete, or the earlier one: run the same "
                      "command again if unsure")
        model.save(output)
        remove(checkpoints)
        if model.student is not None:
            model.student.save(output.parent / f"{output.name}-student")
    if not model.metrics.get("results") and task != "anomaly" and not json_out:
        out.print(f"zero-shot model from {len(model.labels)} label names and {model.data_summary['train_size']} "
                  "unlabeled texts: not evaluated (no labeled data; pass --test LABELED.csv to measure it)")
        out.print(f"saved to {output}" if output else "not saved (pass -o DIR to keep the model)", soft_wrap=True)
        return
    if task == "anomaly" and not json_out:
        _print_anomaly(model, output)
        return
    if json_out:
        out.print_json(json.dumps({"results": model.metrics.get("results", []),
                                   "saved_to": str(output) if output else None}))
        return
    from .evaluation.results import RESULT_COLUMNS, gain_sentence, result_cells, results_title

    table = Table(title=results_title(model.metrics, model.data_summary))
    for key, heading in RESULT_COLUMNS:
        table.add_column(heading, justify="left" if key in ("strategy", "backbone") else "right")
    for row in model.metrics["results"]:
        cells = result_cells(row)
        table.add_row(*(cells[key] for key, _ in RESULT_COLUMNS))
    out.print(table)
    reason = getattr(model.estimator, "reason_", None)
    if reason:
        out.print(f"auto {reason}")
    sentence = gain_sentence(model.metrics)
    if sentence:
        out.print(sentence)
    _print_self_training(model, output)
    out.print(f"saved to {output}" if output else "not saved (pass -o DIR to keep the model)", soft_wrap=True)


def _pool_labeler(engine: str, address: str | None, actors: int | None):
    """None (the pool labelled in this process) or a cluster job per round (tenni.distributed.ClusterLabeler)."""
    if engine == "local":
        if address is not None or actors is not None:
            raise ConfigError("--address and --actors are for --pool-engine ray", hint="add --pool-engine ray")
        return None
    if engine != "ray":
        raise ConfigError(f"unknown pool engine '{engine}'", hint="use local or ray")
    from .distributed import ClusterLabeler

    return ClusterLabeler("ray", address=address, actors=actors)


def _print_self_training(model, output) -> None:
    st = model.metrics.get("self_training")
    if not st:
        return
    head = (f"self-training on {st['pool_size']} unlabeled items ({st['dropped_leaks']} left out: duplicates of the "
            "test data): ")
    if st.get("skipped"):
        out.print(head + "skipped, since on folds of the labeled data the student did worse than the labels "
                  "alone; the model is the labels-only one", soft_wrap=True)
    else:
        kept = ", ".join(str(r["kept"]) for r in st["rounds"])
        out.print(head + f"pseudo-labels kept per round {kept}; {100 * st['gain_over_labels_only']:+.1f} accuracy "
                  "points over the labels alone", soft_wrap=True)
    s = model.metrics.get("student")
    if s:
        speed = s["predictions_per_second"]
        ratio = speed["student"] / max(speed["teacher"], 1e-9)
        out.print(f"student ({s['kind']}): accuracy {s['accuracy']:.3f} vs the teacher's "
                  f"{model.metrics['test']['accuracy']:.3f}, {speed['student']:.0f} predictions/s vs "
                  f"{speed['teacher']:.0f} ({ratio:.1f}x)"
                  + (f"; saved to {output.parent / (output.name + '-student')}" if output else ""), soft_wrap=True)


def _print_anomaly(model, output) -> None:
    m = model.metrics
    out.print(f"anomaly detector ({model.strategy} on {model.backbone_name}): memory bank of "
              f"{m.get('bank_size')} patch features from {m.get('train_size')} normal images; threshold "
              f"{m.get('threshold', 0):.4f} from {m.get('calibration_size')} held-out normals")
    if m.get("test"):
        t = m["test"]
        auroc = "n/a" if t.get("auroc") is None else f"{t['auroc']:.3f}"
        out.print(f"test ({t.get('n')} images): AUROC {auroc}, accuracy {t['accuracy']:.3f}, "
                  f"macro-F1 {t['macro_f1']:.3f}")
    out.print(f"saved to {output}" if output else "not saved (pass -o DIR to keep the model)", soft_wrap=True)


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="A model directory from `tenni fit -o`."),
    inputs: Path = typer.Argument(..., help="Texts: CSV/TSV/JSONL/Parquet with a text column, or .txt lines; "
                                            "images/audio: a file, a folder, or a table of paths."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write .csv or .jsonl (default: CSV to stdout)."),
    text_col: str | None = typer.Option(None, "--text-col", help="Column holding the text."),
    keep: str | None = typer.Option(None, "--keep", help="Input columns to copy into the output, e.g. id,customer."),
    raw_csv: bool = typer.Option(False, "--raw-csv", help="CSV cells exactly as they are: no ' before cells that "
                                                          "begin with = + - @ (for programs, not spreadsheets)."),
    encoding: str = typer.Option("auto", "--encoding", help="Text encoding of the input file."),
    backbone: str | None = typer.Option(None, "--backbone", help="Where the base backbone is, if it moved."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Images/audio: leave out bad files."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
    engine: str = typer.Option("local", "--engine",
                               help="local (in this process), or ray: a big file or a folder of shards into "
                                    "Parquet shards in the -o folder, resumable, on a Ray actor pool."),
    address: str | None = typer.Option(None, "--address", help="--engine ray: a running cluster (auto or "
                                                               "HOST:PORT); default: a local Ray on 127.0.0.1."),
    actors: int | None = typer.Option(None, "--actors", help="--engine ray: actors in the pool [one per core, "
                                                             "or per GPU]."),
    runtime: str = typer.Option("torch", "--runtime", help="torch (a `tenni fit` folder), or onnx (a `tenni export` "
                                                           "folder, run by onnxruntime without PyTorch)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Generation models: most new tokens."),
    temperature: float | None = typer.Option(None, "--temperature", help="Generation models: 0 greedy, > 0 sample."),
    top_p: float | None = typer.Option(None, "--top-p", help="Generation models: nucleus sampling share."),
    stop: list[str] | None = typer.Option(None, "--stop", help="Generation models: cut outputs at this text "
                                                                "(repeatable)."),
):
    """Predict labels and class probabilities for new texts, images or audio (or generate outputs with a
    text-to-text model)."""
    from ._logging import info
    from .data import read_dataset
    from .data.media import split_folder
    from .outputs import prediction_rows, write_predictions

    _limits(max_pixels, max_audio_seconds)
    if engine != "local" or address is not None or actors is not None:
        if runtime != "torch":
            raise ConfigError("--runtime onnx runs in this process; --engine ray runs the torch model",
                              hint="leave out --engine/--address/--actors, or --runtime")
        _at_scale("predict", model_dir, inputs, output, engine=engine, address=address, actors=actors,
                  text_col=text_col, backbone=backbone)
        return
    _output_file(output, (".csv", ".jsonl", ".ndjson"))
    if output is not None:
        _refuse_overwriting_inputs(output, inputs)
        from ._paths import check_writable, refuse_foreign_file
        from .outputs import looks_like_predictions

        refuse_foreign_file(output, looks_like_predictions, "predictions")
        check_writable(output)
    columns = [c.strip() for c in keep.split(",") if c.strip()] if keep else []
    _on_interrupt(f"no predictions were written{f' to {output}' if output else ''}; features encoded so far are "
                  "cached, so running the same command again resumes from there")
    if runtime == "onnx":
        from .export.runtime import load_onnx_model

        model = load_onnx_model(model_dir)
    elif runtime == "torch":
        from .api import load
        from .generate.model import is_generate_model

        if is_generate_model(model_dir):
            _predict_generate(model_dir, inputs, output, text_col=text_col, encoding=encoding, backbone=backbone,
                              decoding={"max_new_tokens": max_new_tokens, "temperature": temperature,
                                        "top_p": top_p, "stop": stop or None})
            return
        model = load(model_dir, backbone=backbone)
    else:
        raise ConfigError(f"unknown runtime '{runtime}'", hint="--runtime torch or --runtime onnx")
    if inputs.is_dir() and split_folder(inputs)[1] is not None:  # a dataset folder: its test/, as evaluate reads
        inputs = split_folder(inputs)[1]
        info(f"the folder has train/ and test/: predicting the files under {inputs}")
    dataset = read_dataset(inputs, text_col=text_col, labeled=False, encoding=encoding,
                           skip_bad_files=skip_bad_files)
    dataset.require_modality(model.modality, "the model's input")
    kept = None
    if columns:
        from .data.readers import read_columns

        kept = read_columns(inputs, columns, encoding=encoding)
        clash = [c for c in columns if c in ("text", "path", "prediction", "confidence", "score", "threshold")
                 or c.startswith("p_")]
        if clash:
            raise ConfigError(f"--keep column(s) {', '.join(repr(c) for c in clash)} would clash with predict's "
                              "own output columns", hint="keep other columns, or rename those in the input")
    rows = prediction_rows(model, dataset, kept)
    write_predictions(rows, output, raw=raw_csv)
    if output is not None:
        err.print(f"{len(rows)} predictions written to {output}", soft_wrap=True, markup=False)


def _refuse_overwriting_inputs(output: Path, inputs: Path) -> None:
    """An output that is also the input (the file predicted on) is refused before any work:
    writing there would destroy what the command reads."""
    def same(a: Path, b: Path) -> bool:
        try:
            return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
        except OSError:
            return False

    if same(output, inputs):
        other = output.with_name(output.stem + ".predictions.csv")
        raise ConfigError("the output is the input file; writing the predictions there would overwrite it",
                          path=output, hint=f"pass -o a new file, e.g. -o {other}")


def _at_scale(task: str, model: str | Path, data: Path, output: Path | None, **options) -> None:
    """``predict --engine ray`` and ``embed``: shards of ``data`` into Parquet files in the ``output`` folder."""
    from .distributed import embed_at_scale, predict_at_scale

    if output is None:
        raise ConfigError(f"{task} at scale writes Parquet shards into a folder: pass -o FOLDER",
                          hint=f"e.g. -o {'preds' if task == 'predict' else 'features'}/")
    if output.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".parquet"):
        raise ConfigError(f"-o {output} names a file; {task} at scale writes a folder of Parquet shards",
                          hint=f"e.g. -o {output.with_suffix('')}/")
    run = predict_at_scale if task == "predict" else embed_at_scale
    summary = run(model, data, output, **options)
    rate = f"{summary['items_per_second']:.1f} items/s" if summary["items_per_second"] else "nothing new to run"
    out.print(f"{summary['items']} items in {summary['shards_done']} of {summary['shards']} shard(s) in {output}; "
              f"{summary['rejects']} rejected; {summary['shards_failed']} shard(s) failed; {rate}", soft_wrap=True)
    if summary["shards_failed"]:
        raise TenniError(f"{summary['shards_failed']} shard(s) failed, first: {summary['failures'][0]['error']}",
                         hint="fix the cause and run the same command again: finished shards are kept")


@app.command()
def embed(
    backbone: str = typer.Argument(..., help="A registered backbone (`tenni models`), a local folder or a hub id."),
    data: Path = typer.Argument(..., help="CSV/TSV/JSONL/Parquet/.txt, a folder of such shards, or a folder of "
                                          "images/audio."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the Parquet shards (input columns + "
                                                             "'embedding')."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (an actor pool)."),
    address: str | None = typer.Option(None, "--address", help="--engine ray: auto or HOST:PORT of a running "
                                                               "cluster; default: a local Ray on 127.0.0.1."),
    actors: int | None = typer.Option(None, "--actors", help="--engine ray: actors in the pool."),
    text_col: str | None = typer.Option(None, "--text-col", help="Column holding the text."),
):
    """Frozen features of a backbone for every row of DATA, as Parquet shards; an interrupted run resumes."""
    _at_scale("embed", backbone, data, output, engine=engine, address=address, actors=actors, text_col=text_col)


@app.command()
def export(
    model_dir: Path = typer.Argument(..., help="A model directory from `tenni fit -o`."),
    output: Path = typer.Option(..., "-o", "--output", help="New folder for model.onnx, tokenizer.json, the "
                                                            "manifest and parity.json."),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    quantize: str | None = typer.Option(None, "--quantize", help="int8: dynamic quantization (smaller, faster), "
                                                                 "gated by --check."),
    check: Path | None = typer.Option(None, "--check", help="Labeled data: accuracy and macro-F1 of the original "
                                                            "and the export side by side; gates --quantize."),
    max_drop: float = typer.Option(0.5, "--max-drop", help="Accuracy points int8 may lose on --check data."),
    text_col: str | None = typer.Option(None, "--text-col"),
    label_col: str | None = typer.Option(None, "--label-col"),
    encoding: str = typer.Option("auto", "--encoding"),
    backbone: str | None = typer.Option(None, "--backbone", help="Where the base backbone is, if it moved."),
):
    """Export a model to ONNX (input ids to probabilities) with its tokenizer, manifest and parity report."""
    from .export import export_model

    manifest = export_model(model_dir, output, format=format, quantize=quantize, check=check, max_drop=max_drop,
                            backbone=backbone, text_col=text_col, label_col=label_col, encoding=encoding)
    parity = manifest["parity"]
    size = manifest["graph"]["bytes"] / 1e6
    kind = "int8" if manifest["quantization"] else "float32"
    out.print(f"exported {manifest['exported_strategy']} ({manifest['source']['backbone']}) to {output}: "
              f"{manifest['graph']['file']} {size:.1f} MB {kind}", soft_wrap=True)
    diffs = f"max |Δp| float32 {parity['max_abs_diff_fp32']:.1e}"
    if "max_abs_diff_int8" in parity:
        diffs += f", int8 {parity['max_abs_diff_int8']:.1e}"
    out.print(f"parity on {parity['samples']} {parity['source']}: {diffs}", soft_wrap=True)
    if "check" in parity:
        c = parity["check"]
        cells = "; ".join(f"{name} {m['accuracy']:.3f} / {m['macro_f1']:.3f}"
                          for name, m in c.items() if isinstance(m, dict))
        out.print(f"accuracy / macro-F1 on {c['n']} check inputs: {cells}", soft_wrap=True)
    if manifest.get("features"):
        out.print(f"head only: {manifest['features']['front']}", soft_wrap=True)


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., help="A model directory from `tenni fit -o`."),
    test: Path = typer.Argument(..., help="Labeled test data."),
    text_col: str | None = typer.Option(None, "--text-col"),
    label_col: str | None = typer.Option(None, "--label-col"),
    encoding: str = typer.Option("auto", "--encoding"),
    backbone: str | None = typer.Option(None, "--backbone", help="Where the base backbone is, if it moved."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Images/audio: leave out bad files."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
):
    """Measure a saved model on labeled data: accuracy, macro-F1, per-class metrics, confusion matrix."""
    from rich.markup import escape

    from .api import load
    from .data import read_dataset
    from .data.media import split_folder
    from .generate.model import is_generate_model

    _limits(max_pixels, max_audio_seconds)

    if is_generate_model(model_dir):
        _evaluate_generate(model_dir, test, input_col=text_col, output_col=label_col, encoding=encoding,
                           backbone=backbone, json_out=json_out)
        return
    model = load(model_dir, backbone=backbone)
    if test.is_dir() and split_folder(test)[1] is not None:
        test = split_folder(test)[1]  # a dataset folder with train/ and test/: evaluate on test/
    dataset = read_dataset(test, text_col=text_col, label_col=label_col, encoding=encoding,
                           skip_bad_files=skip_bad_files)
    anomaly = getattr(model, "task", "classify") == "anomaly"
    metrics = model.evaluate(dataset)  # it warns about labels the model never saw
    if json_out:
        out.print_json(json.dumps(metrics))
        return
    if anomaly:
        auroc = "n/a (needs normal and defect examples)" if metrics.get("auroc") is None else \
            f"{metrics['auroc']:.3f}"
        out.print(f"[bold]AUROC[/] {auroc}   (normal label: {escape(str(metrics.get('normal_label')))})")
    out.print(f"[bold]accuracy[/] {metrics['accuracy']:.3f}   [bold]macro-F1[/] {metrics['macro_f1']:.3f}   "
              f"(n = {metrics['n']})")
    table = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for cls, m in metrics["per_class"].items():
        table.add_row(escape(cls), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    out.print(table)
    cm = metrics["confusion_matrix"]
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for lab in cm["labels"]:
        matrix.add_column(escape(lab), justify="right")
    for lab, row in zip(cm["labels"], cm["matrix"]):
        matrix.add_row(escape(lab), *[str(v) for v in row])
    out.print(matrix)


@app.command()
def adapt(
    corpus: Path | None = typer.Argument(None, help="Unlabeled texts: .txt (one per line), CSV/JSONL column, "
                                                    "or a folder of .txt files."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory for the adapted backbone."),
    backbone: str = typer.Option("text/minilm", "--backbone", "-b", help="Backbone to continue pretraining."),
    method: str = typer.Option("spans", "--method",
                               help="spans (passages of one document as positives), simcse or tsdae (sentence "
                                    "encoders), or mlm."),
    merge: str = typer.Option("auto", "--merge", help="Share of the adapted weights in the result, the rest the "
                                                       "base's: auto (from how well the base knows the corpus), or "
                                                       "a number from 0 to 1 (1: as trained)."),
    budget: str | None = typer.Option(None, "--budget", help="Stop after this long, e.g. 10m (saves cleanly)."),
    max_steps: int = typer.Option(1000, "--max-steps", help="Optimizer steps at most."),
    from_labeled: Path | None = typer.Option(None, "--from-labeled",
                                             help="Task-adaptive: use the texts of this labeled set."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of an interrupted run."),
    text_col: str | None = typer.Option(None, "--text-col"),
    encoding: str = typer.Option("auto", "--encoding", help="Text encoding of the corpus files."),
    set_: list[str] | None = typer.Option(None, "--set", help="Other options KEY=VALUE (see AdaptConfig)."),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="Train data-parallel on N processes: relaunches this command with "
                                       "torch.distributed.run (gloo, CPU)."),
):
    """Continue pretraining a backbone on unlabeled in-domain text; use the result with --backbone DIR."""
    from .adapt import adapt as run_adapt
    from .distributed.launch import check_parallel_adapt, in_launched_run, relaunch

    if corpus is None and from_labeled is None:
        raise ConfigError("give an unlabeled corpus, or --from-labeled DATA", hint="tenni adapt texts.txt -o dir")
    from ._paths import check_writable

    check_writable(output, folder=True)
    if processes > 1 and not in_launched_run():
        check_parallel_adapt(budget)
        code = relaunch(processes, sys.argv[1:])
        if code:
            sys.exit(code)
        return
    main_process = os.environ.get("RANK", "0") == "0" if in_launched_run() else True
    settings = {}
    if not main_process:  # the other ranks train in step, silently; the main one prints and saves
        from ._logging import set_quiet

        set_quiet(True)
        settings["TENNI_NO_PROGRESS"] = "1"
    _on_interrupt(f"{output} was not changed; checkpoints saved so far are in {output}.partial: add --resume to "
                  "the same command to continue from the last one")
    config = dict(_parse_set(set_) or {}, method=method, max_steps=max_steps, merge=merge)
    if budget:
        config["budget"] = parse_duration(budget)
    from ._context import temporary_env

    with temporary_env(**settings):
        path = run_adapt(corpus, output, backbone=backbone, config=config, resume=resume,
                         from_labeled=from_labeled, text_col=text_col, encoding=encoding)
    if not main_process:
        return
    out.print(f"adapted backbone: {path}  (use it with --backbone {path})", soft_wrap=True)  # paths unbroken
    labeled = from_labeled if from_labeled is not None else "YOUR_LABELED_DATA"
    out.print(f"check it against its base before fitting (adapting can also cost accuracy): "
              f"tenni assess {labeled} --backbones {backbone},{path}", soft_wrap=True)


@app.command()
def models(
    pattern: str = typer.Argument("*", help="Filter names, e.g. 'text/*'."),
    directory: Path | None = typer.Option(None, "--dir", help="Also list adapted backbones found in this folder."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """List registered backbones and whether each is usable offline here."""
    from .backbones import list_backbones

    specs = list_backbones(pattern)
    rows = [{"name": s.name, "modality": s.modality, "dim": s.dim, "languages": list(s.languages),
             "offline": s.available(), "trainable": s.trainable, "source": s.source, "licence": s.licence,
             "description": s.description} for s in specs]
    from .generate.backbone import llm_rows

    rows += llm_rows(pattern)
    if directory is not None:
        from .adapt.continued import find_adapted

        for found in find_adapted(directory):
            rows.append({"name": found["path"], "modality": "text", "dim": None, "languages": [], "offline": True,
                         "trainable": True, "source": f"adapted from {found['base']}", "licence": "as its base",
                         "description": f"{found['method']} on {found['corpus_texts']} texts, {found['steps']} steps "
                                        f"(from {found['base']})"})
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="backbones (any local folder or Hugging Face hub id works too)")
    table.add_column("name", no_wrap=True)
    for col in ("modality", "languages", "dim", "offline", "trainable", "licence"):
        table.add_column(col, no_wrap=True)
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], r["modality"], ",".join(r["languages"]), str(r["dim"] or ""),
                      "[green]yes[/]" if r["offline"] else "[red]no[/]", "yes" if r["trainable"] else "frozen",
                      r["licence"], r["description"])
    out.print(table)


@app.command()
def assess(
    data: Path = typer.Argument(..., help="Labeled training data."),
    backbones: str | None = typer.Option(None, "--backbones",
                                         help="Comma-separated candidates (default: every offline backbone)."),
    test: Path | None = typer.Option(None, "--test", help="Unlabeled or labeled texts you will predict on "
                                                          "(for the embedding-space shift measure)."),
    text_col: str | None = typer.Option(None, "--text-col"),
    label_col: str | None = typer.Option(None, "--label-col"),
    encoding: str = typer.Option("auto", "--encoding"),
    seed: int = typer.Option(0, "--seed"),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Images/audio: leave out bad files."),
    unlabeled: Path | None = typer.Option(None, "--unlabeled", help="An unlabeled pool: is self-training on it "
                                                                     "likely to help?"),
    task: str = typer.Option("classify", "--task", help="classify, or generate (input/output pairs)."),
    instruction: str | None = typer.Option(None, "--instruction", help="--task generate: text put before inputs."),
    json_out: bool = typer.Option(False, "--json", help="Print the assessment as JSON."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
):
    """Before training: will transfer work here, with which backbone, and which strategy?"""
    from .assess import assess as run_assess

    _limits(max_pixels, max_audio_seconds)
    _on_interrupt("nothing was written; features encoded so far are cached, so running the same command again "
                  "resumes from there")
    if task == "generate":
        _assess_generate(data, backbone=backbones, instruction=instruction, input_col=text_col,
                         output_col=label_col, encoding=encoding, seed=seed, json_out=json_out)
        return

    names = [b.strip() for b in backbones.split(",") if b.strip()] if backbones else None
    result = run_assess(data, backbones=names, test=test, seed=seed, text_col=text_col, label_col=label_col,
                        encoding=encoding, skip_bad_files=skip_bad_files, unlabeled=unlabeled)
    if json_out:
        out.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{result.n_examples} examples, {result.n_classes} classes (smallest: "
                        f"{result.min_per_class}); CV: {result.folds}")
    zero_shot = any(r.zeroshot_accuracy is not None for r in result.reports)
    for col in ("rank", "backbone", "probe acc [95% CI]", "kNN acc", "LogME", "H-score", "vs scratch", "verdict"):
        table.add_column(col, justify="right" if col not in ("backbone", "verdict") else "left")
        if col == "kNN acc" and zero_shot:
            table.add_column("zero-shot", justify="right")
    for i, r in enumerate(result.reports, start=1):
        gain = "" if r.gain_over_scratch is None else f"{100 * r.gain_over_scratch:+.1f} pts"
        zs = ([] if not zero_shot else ["" if r.zeroshot_accuracy is None else f"{r.zeroshot_accuracy:.3f}"])
        table.add_row(str(i) if r.gain_over_scratch is not None else "", r.backbone,
                      f"{r.probe_accuracy:.3f} [{r.probe_interval[0]:.3f}, {r.probe_interval[1]:.3f}]",
                      f"{r.knn_accuracy:.3f}", *zs, f"{r.logme:.3f}", f"{r.h_score:.2f}", gain, r.verdict)
    out.print(table)
    for r in result.reports:
        if r.reasons:
            out.print(f"[bold]{r.backbone}[/]: " + "; ".join(r.reasons))
    if result.label_check:
        out.print(f"[bold]label check[/] ({'`tenni check`'} for details): {result.label_check}")
    rec = result.recommendation
    out.print(f"[bold green]recommended:[/] --backbone {rec['backbone']} --strategy {rec['strategy']}"
              + ("  (and try continued pretraining on unlabeled in-domain text)" if rec["continued_pretraining"]
                 else ""))
    for reason in rec["reasons"]:
        out.print(f"  - {reason}")
    if result.self_training:
        out.print(f"[bold]unlabeled pool[/] ({result.self_training['pool_size']} items): "
                  f"{result.self_training['verdict']}", soft_wrap=True)


@app.command()
def check(
    data: Path = typer.Argument(..., help="Labeled data to check."),
    test: Path | None = typer.Option(None, "--test", help="Test data: report items that also occur in training."),
    backbone: str = typer.Option("auto", "--backbone", "-b"),
    text_col: str | None = typer.Option(None, "--text-col"),
    label_col: str | None = typer.Option(None, "--label-col"),
    encoding: str = typer.Option("auto", "--encoding"),
    limit: int = typer.Option(20, "--limit", min=1, help="Rows to show per table."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Images/audio: leave out bad files."),
    json_out: bool = typer.Option(False, "--json", help="Print everything as JSON."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
):
    """Find likely mislabeled examples, duplicates and train/test leakage."""
    from rich.markup import escape

    from .assess import check_labels

    _limits(max_pixels, max_audio_seconds)
    _on_interrupt("nothing was written; features encoded so far are cached, so running the same command again "
                  "resumes from there")

    result = check_labels(data, test=test, backbone=backbone, text_col=text_col, label_col=label_col,
                          encoding=encoding, skip_bad_files=skip_bad_files)
    if json_out:
        out.print_json(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    # line-oriented output: user text is never wrapped or read as markup, whatever the terminal's width
    out.print(result.summary(), soft_wrap=True)
    if result.suspected_mislabels:
        table = Table(title="likely mislabeled (out-of-fold probe disagrees confidently)")
        for col in ("where", "label", "suggested", "p(label)", "text"):
            table.add_column(col)
        for m in result.suspected_mislabels[:limit]:
            table.add_row(*(escape(str(x)) for x in (m["source"], m["label"], m["suggested"],
                                                      f"{m['p_label']:.2f}", m["text"][:80])))
        out.print(table)
    for g in result.duplicate_groups[:limit]:
        mark = "[red]conflicting labels[/] " if len(set(g["labels"])) > 1 else ""
        out.print(f"duplicate {mark}" + escape(f"{', '.join(g['sources'])}: {g['text'][:60]!r} -> "
                                               f"{', '.join(g['labels'])}"), soft_wrap=True)
    for d in result.near_duplicates[:limit]:
        out.print(escape(f"near duplicate ({d['similarity']:.3f}): {d['a']} ~ {d['b']} ({', '.join(d['labels'])})"),
                  soft_wrap=True)
    for leak in result.leakage[:limit]:
        out.print("[red]leak[/] " + escape(f"({leak['kind']}, {leak['similarity']:.3f}): {leak['test']} = "
                                           f"{leak['train']}"), soft_wrap=True)


@app.command()
def curve(
    data: Path = typer.Argument(..., help="Labeled data."),
    output: Path = typer.Option(Path("curve"), "-o", "--output", help="Directory for curve.json/.png/.html."),
    strategy: str | None = typer.Option(None, "--strategy", "-s", help="Strategy to trace [default: probe]."),
    backbone: str = typer.Option("auto", "--backbone", "-b"),
    budgets: str | None = typer.Option(None, "--budgets",
                                       help="Labels per class, e.g. 2,4,8,16,32 (--task generate: training pairs)."),
    seeds: int = typer.Option(3, "--seeds", help="Random draws per budget."),
    test: Path | None = typer.Option(None, "--test", help="Separate labeled test file (else a 30% hold-out)."),
    target: float | None = typer.Option(None, "--target", help="Accuracy to reach: how many labels per class?"),
    text_col: str | None = typer.Option(None, "--text-col"),
    label_col: str | None = typer.Option(None, "--label-col"),
    encoding: str = typer.Option("auto", "--encoding"),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Images/audio: leave out bad files."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
    task: str = typer.Option("classify", "--task",
                             help="classify, or generate: ROUGE-L at growing numbers of training pairs (--budgets), "
                                  "lora beside prompting."),
    instruction: str | None = typer.Option(None, "--instruction", help="--task generate: text put before inputs."),
    max_test: int | None = typer.Option(None, "--max-test", help="--task generate: score at most this many test "
                                                                 "pairs (generation is the slow part)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="--task generate: most new tokens."),
    set_: list[str] | None = typer.Option(None, "--set", help="Strategy option KEY=VALUE (repeatable)."),
):
    """Accuracy at growing label budgets, transfer vs scratch, with a forecast: how many labels do you need?"""
    import tempfile

    from ._paths import check_writable, unowned, write_owned
    from .evaluation.curve import curve_table, labels_for, plot_curve, run_curve
    from .evaluation.report import curve_section, page

    try:
        sizes = [int(b) for b in budgets.split(",") if b.strip()] if budgets else None
    except ValueError:
        raise ConfigError(f"--budgets takes whole numbers separated by commas, got '{budgets}'",
                          hint="--budgets 2,4,8,16") from None
    if task not in ("classify", "generate"):
        raise ConfigError(f"unknown task '{task}'", hint="use classify or generate")
    if task == "classify" and (instruction, max_test, max_new_tokens) != (None, None, None):
        raise ConfigError("--instruction, --max-test and --max-new-tokens are for --task generate",
                          hint="add --task generate")
    if target is not None and not 0 < target <= 1:
        raise ConfigError(f"--target is an accuracy between 0 and 1, got {target}", hint="--target 0.9")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} is a file; curve writes a folder (curve.json, .png, .html)",
                          hint="pass -o with a new or existing folder")
    names = ("curve.json", "curve.png", "curve.html")
    theirs = unowned(output, names) if output.is_dir() else []
    if theirs:  # a curve of the user's own, or one edited since: never replaced
        raise ConfigError(f"{output} holds {', '.join(theirs)} that tenni did not write (or that changed since); "
                          "refusing to replace", hint="move them, or pass -o with another folder")
    check_writable(output, folder=True)
    _limits(max_pixels, max_audio_seconds)
    _on_interrupt(f"nothing in {output} was changed; features encoded so far are cached, so running the same "
                  "command again resumes from there")
    if task == "generate":
        _curve_generate(data, output, sizes=sizes, seeds=seeds, strategy=strategy or "lora", backbone=backbone,
                        test=test, input_col=text_col, output_col=label_col, encoding=encoding,
                        instruction=instruction, max_test=max_test, config=_parse_set(set_),
                        decoding={"max_new_tokens": max_new_tokens} if max_new_tokens else None)
        return
    result = run_curve(data, strategy=strategy, backbone=backbone, budgets=sizes, seeds=seeds, test=test,
                       config=_parse_set(set_), text_col=text_col, label_col=label_col, encoding=encoding,
                       skip_bad_files=skip_bad_files)
    if target is not None:  # in curve.json too, not only on the screen
        result["target"] = {"accuracy": target,
                            "labels_per_class": {name: labels_for(result, name, target) for name in result["curves"]}}
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the plot is drawn aside, then written with the others
        plot_curve(result, Path(tmp) / "curve.png")
        png = (Path(tmp) / "curve.png").read_bytes()
        html_text = page(f"learning curve: {result['strategy']}", [curve_section(result, Path(tmp) / "curve.png")])
    write_owned(output, {"curve.json": (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
                         "curve.png": png, "curve.html": html_text.encode("utf-8")})
    table = Table(title=f"{result['strategy']} on {result['backbone']} vs scratch; {result['seeds']} seeds, "
                        f"test n = {result['test_size']}")
    for col in ("strategy", "labels/class", "accuracy", ""):
        table.add_column(col)
    for row in curve_table(result):
        table.add_row(*row)
    out.print(table)
    saved = result.get("labels_saved")
    if saved:
        if saved["scratch_labels_per_class"] is not None:
            out.print(f"to reach {saved['target_accuracy']:.3f}, transfer used {saved['transfer_labels_per_class']} "
                      f"labels per class; scratch would need about {saved['scratch_labels_per_class']:.0f}")
        else:
            out.print(f"scratch's forecast plateau ({saved['scratch_plateau']:.3f}) stays below "
                      f"{saved['target_accuracy']:.3f}: transfer's accuracy is out of its reach")
    if target is not None:
        for name, need in result["target"]["labels_per_class"].items():
            out.print(f"{name}: about {need:.0f} labels per class for accuracy {target:.2f}" if need is not None
                      else f"{name}: accuracy {target:.2f} not reachable (its fitted plateau is below it)")
    out.print(f"written: {output / 'curve.html'}, {output / 'curve.png'}, {output / 'curve.json'}", soft_wrap=True)


@app.command()
def report(
    model_dir: Path = typer.Argument(..., help="A model directory from `tenni fit -o`."),
    data: Path | None = typer.Option(None, "--data", help="Labeled data: adds the assessment."),
    with_curve: bool = typer.Option(False, "--curve", help="With --data: add a learning curve (slower)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="HTML file [default: MODEL_DIR/report.html]."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Images/audio: leave out bad files."),
    max_pixels: int | None = _max_pixels(),
    max_audio_seconds: float | None = _max_audio_seconds(),
):
    """Write a self-contained HTML report of a model: data, results, per-class metrics, confusion matrix."""
    from ._paths import check_writable, refuse_foreign_file
    from .report import write_report

    _output_file(output, (".html", ".htm"))
    if output is not None:
        refuse_foreign_file(output, lambda head: head.lstrip().lower().startswith(b"<!doctype html>")
                            and b"tenni" in head, "a report")
        check_writable(output)
    elif model_dir.is_dir():
        check_writable(model_dir / "report.html")
    _limits(max_pixels, max_audio_seconds)
    _on_interrupt("the report was not written; run the same command again")
    if with_curve and data is None:
        raise ConfigError("--curve needs --data (the labeled data to trace the curve on)", hint="add --data DATA")
    path = write_report(model_dir, output, data=data, curve=with_curve, skip_bad_files=skip_bad_files)
    out.print(f"written: {path}", soft_wrap=True)


@app.command()
def serve(
    model_dirs: list[Path] = typer.Argument(..., help="Model directories from `tenni fit -o` (or `tenni export` with "
                                                      "--runtime onnx); each is served under its folder name."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", help="Worker processes; each loads the models once."),
    runtime: str = typer.Option("torch", "--runtime", help="torch, or onnx for exported folders."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", metavar="VAR",
                                           help="Require 'Authorization: Bearer <key>' on /v1/*, the key being "
                                                "this environment variable's value."),
    cors: list[str] | None = typer.Option(None, "--cors", metavar="ORIGIN",
                                          help="Allow browser calls from this origin (repeatable; off by default)."),
    max_batch_wait_ms: float = typer.Option(5.0, "--max-batch-wait-ms",
                                            help="How long concurrent requests are gathered into one batch."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most inputs run as one batch."),
    threads: int | None = typer.Option(None, "--threads",
                                       help="Compute threads per worker (torch / onnxruntime) [default: the "
                                            "cores shared among the workers]; 1 on a busy machine."),
    limit: list[str] | None = typer.Option(None, "--limit", metavar="KEY=VALUE",
                                           help="A request limit, e.g. max_items=64, max_text_chars=5000, "
                                                "max_body_bytes, max_image_pixels, max_audio_seconds, "
                                                "read_timeout_s (repeatable)."),
):
    """Serve models over HTTP: POST /v1/models/NAME/predict, /health, /ready, /docs."""
    import dataclasses

    from .serve import Limits
    from .serve.run import serve as run_server

    fields = {f.name: f for f in dataclasses.fields(Limits)}
    values = {}
    for item in limit or []:
        key, _, value = (part.strip() for part in item.partition("="))
        if key not in fields:
            raise ConfigError(f"--limit '{item}': unknown limit or not KEY=VALUE", hint=f"keys: {', '.join(fields)}")
        try:
            values[key] = (int if fields[key].type in (int, "int") else float)(value)
        except ValueError:
            raise ConfigError(f"--limit {key}={value}: not a number") from None
    run_server(model_dirs, host=host, port=port, workers=workers, runtime=runtime, api_key_env=api_key_env,
               cors_origins=cors or None, batch_wait_ms=max_batch_wait_ms, max_batch=max_batch,
               limits=Limits(**values), threads=threads)


@app.command()
def merge(
    model_dir: Path = typer.Argument(..., help="A text-to-text model from `tenni fit --task generate` (lora/qlora)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the merged Hugging Face model."),
    backbone: str | None = typer.Option(None, "--backbone", help="Where the base model is, if it moved."),
):
    """Fold a LoRA/QLoRA adapter into its base model: a plain Hugging Face folder (safetensors + tokenizer)."""
    from .generate import merge as run_merge
    from .generate.model import is_generate_model

    if not is_generate_model(model_dir):
        raise ConfigError(f"{model_dir} is not a text-to-text (generate) model",
                          hint="merge takes the -o folder of `tenni fit --task generate --strategy lora`")
    path = run_merge(model_dir, output, backbone=backbone)
    out.print(f"merged model written to {path} (load it with transformers' AutoModelForCausalLM)", soft_wrap=True)


def _fit_generate(data, *, output, test, strategy, backbone, config, seed, baseline, test_size, input_col,
                  output_col, encoding, instruction, json_out, checkpoints=None, resume=False,
                  main_process=True) -> None:
    from ._checkpoints import checkpointing, remove
    from .generate import fit as fit_generate

    if output is not None:
        from ._paths import AtomicDirectory

        AtomicDirectory(output, marker="tenni.json").check()  # refuse a bad -o before the long work
        _on_interrupt(f"no model was saved to {output}; training keeps a checkpoint per epoch in {checkpoints}: add "
                      "--resume to continue from it")
    with checkpointing(checkpoints, resume, main=main_process):
        if checkpoints is not None and (strategy or "lora") != "prompt":
            config = dict(config or {}, checkpoint_dir=str(checkpoints / "generate"))
        model = fit_generate(data, test=test, strategy=strategy, backbone=backbone, config=config, seed=seed,
                             baseline=baseline, test_size=test_size, input_col=input_col, output_col=output_col,
                             encoding=encoding, instruction=instruction)
    if not main_process:  # the other ranks trained in step; the main one saves and prints
        return
    if output is not None:
        model.save(output)
        remove(checkpoints)
    results = model.metrics["results"]
    if json_out:
        out.print_json(json.dumps({"results": results, "transfer_gain": model.metrics.get("transfer_gain"),
                                   "saved_to": str(output) if output else None}))
        return
    table = Table(title=f"{model.metrics['train_size']} training pairs, evaluated on {model.metrics['test_size']} "
                        f"({model.metrics['test_source']})")
    for col in ("strategy", "backbone", "ROUGE-L", "exact match", "chrF", "train s", "generate s"):
        table.add_column(col, justify="left" if col in ("strategy", "backbone") else "right")
    for r in results:
        table.add_row(r["strategy"], r["backbone"], f"{100 * r['rougeL']:.1f}", f"{100 * r['exact_match']:.1f}",
                      f"{100 * r['chrf']:.1f}", f"{r['train_seconds']:.1f}", f"{r['generate_seconds']:.1f}")
    out.print(table)
    gain = model.metrics.get("transfer_gain")
    if gain:
        out.print(f"gain over prompting ({results[-1]['strategy']}): {100 * gain['rougeL']:+.1f} ROUGE-L points, "
                  f"{100 * gain['exact_match']:+.1f} exact-match points")
    out.print(f"saved to {output}" if output else "not saved (pass -o DIR to keep the model)", soft_wrap=True)


def _curve_generate(data, output: Path, **options) -> None:
    import tempfile

    from ._paths import write_owned
    from .evaluation.report import page, png_file_tag, table
    from .generate.api import curve as generation_curve
    from .generate.api import curve_rows, plot_generation_curve

    result = generation_curve(data, **options)
    heads = ["method", "training pairs", "ROUGE-L", "exact match", "chrF"]
    rows = curve_rows(result)
    with tempfile.TemporaryDirectory() as tmp:
        plot_generation_curve(result, Path(tmp) / "curve.png")
        png = (Path(tmp) / "curve.png").read_bytes()
        html_text = page(f"generation curve: {result['strategy']}",
                         [("Curve", png_file_tag(Path(tmp) / "curve.png") + table(heads, rows))])
    write_owned(output, {"curve.json": (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
                         "curve.png": png, "curve.html": html_text.encode("utf-8")})
    view = Table(title=f"{result['strategy']} on {result['backbone']} vs prompting; {result['seeds']} seed(s), "
                       f"test n = {result['test_size']}")
    for col in heads:
        view.add_column(col)
    for row in rows:
        view.add_row(*row)
    out.print(view)
    out.print(f"written: {output / 'curve.html'}, {output / 'curve.png'}, {output / 'curve.json'}", soft_wrap=True)


def _predict_generate(model_dir, inputs, output, *, text_col, encoding, backbone, decoding) -> None:
    import csv

    from ._paths import atomic_write_bytes
    from .generate import load as load_generate
    from .generate import read_pairs

    model = load_generate(model_dir, backbone=backbone)
    pairs = read_pairs(inputs, input_col=text_col, labeled=False, encoding=encoding)
    outputs = model.generate(pairs, **decoding)
    rows = [{"input": i, "output": o} for i, o in zip(pairs.inputs, outputs)]
    if output is not None and output.suffix.lower() in (".jsonl", ".ndjson"):
        atomic_write_bytes(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    else:
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["input", "output"])
        writer.writeheader()
        writer.writerows(rows)
        if output is None:
            sys.stdout.write(buffer.getvalue())
        else:
            atomic_write_bytes(output, buffer.getvalue().encode("utf-8"))
    if output is not None:
        err.print(f"{len(rows)} outputs written to {output}")


def _evaluate_generate(model_dir, test, *, input_col, output_col, encoding, backbone, json_out) -> None:
    from rich.markup import escape

    from .generate import load as load_generate

    model = load_generate(model_dir, backbone=backbone)
    metrics = model.evaluate(test, input_col=input_col, output_col=output_col, encoding=encoding)
    if json_out:
        out.print_json(json.dumps(metrics, ensure_ascii=False))
        return
    out.print(f"[bold]ROUGE-L[/] {100 * metrics['rougeL']:.1f}   [bold]exact match[/] "
              f"{100 * metrics['exact_match']:.1f}   [bold]chrF[/] {100 * metrics['chrf']:.1f}   (n = {metrics['n']})")
    table = Table(title="examples")
    for col in ("input", "reference", "output", "ROUGE-L"):
        table.add_column(col, justify="right" if col == "ROUGE-L" else "left")
    for e in metrics["examples"][:10]:
        table.add_row(escape(e["input"][:80]), escape(e["reference"]), escape(e["output"]), f"{100 * e['rougeL']:.0f}")
    out.print(table)


def _assess_generate(data, *, backbone, instruction, input_col, output_col, encoding, seed, json_out) -> None:
    from .generate import assess as assess_generate

    result = assess_generate(data, backbone=backbone, instruction=instruction, input_col=input_col,
                             output_col=output_col, encoding=encoding, seed=seed)
    if json_out:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    out.print(f"{result['n_pairs']} pairs; {result['backbone']}: per-token loss on the outputs "
              f"{result['base_loss_per_token']:.3f} nats (perplexity {result['base_perplexity']:.1f})")
    for key in sorted(k for k in result if k.startswith("prompt_")):
        r = result[key]
        out.print(f"{key.replace('_', ' ')}: ROUGE-L {100 * r['rougeL']:.1f}, exact match "
                  f"{100 * r['exact_match']:.1f}, chrF {100 * r['chrf']:.1f} on {result['n_scored']} pairs")
    rec = result["recommendation"]
    out.print(f"[bold green]recommended:[/] --task generate --strategy {rec['strategy']}")
    for reason in rec["reasons"]:
        out.print(f"  - {reason}")


@app.command()
def version():
    """Print tenni's version."""
    from . import __version__

    out.print(__version__)


def main() -> None:
    import signal

    from ._limits import media_limits
    from ._threads import cpu_threads

    received: list[int] = []

    def on_signal(signum, frame):  # SIGTERM (and SIGINT) unwind like Ctrl-C: atomic writes clean up
        received.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, on_signal)
        except (ValueError, OSError):  # not the main thread: the default handlers stay
            pass
    _on_interrupt("nothing was written")
    try:
        with cpu_threads(), media_limits():
            code = app(standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt into this return value
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except TenniError as exc:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted(received)
    except SystemExit:
        raise
    except Exception as exc:  # click's usage errors
        usage, abort = _click_exceptions()
        if isinstance(exc, usage):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, abort):
            _interrupted(received)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted(received: list[int]) -> None:
    """One line on stderr, then exit 130 (Ctrl-C) or 143 (SIGTERM), so `tenni fit ... && deploy` stops."""
    import signal

    terminated = signal.SIGTERM in received
    err.print(f"{'terminated' if terminated else 'interrupted'}: {_interrupt_note}", highlight=False,
              soft_wrap=True, markup=False)
    sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage-error and abort classes of click, and of typer >= 0.20, which vendors a copy of click (typer._click)
    and raises its own exceptions, not subclasses of click's."""
    import importlib

    usage, abort = [], []
    for name in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        usage += [module.ClickException] if hasattr(module, "ClickException") else []
        abort += [module.Abort] if hasattr(module, "Abort") else []
    return tuple(usage), tuple(abort)


if __name__ == "__main__":
    main()
