"""The ``automl`` command: parse options, call the library, render results. No ML logic here.

Errors automl raises on purpose print one line on stderr and exit with status 2; ``--debug``
shows the traceback instead. Data and tables go to stdout, logs and progress bars to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter off the terminal, and
# have TensorFlow grow GPU memory as needed in every process of every command, whatever touches
# a GPU first (nn.fit.memory_growth sets it too, and fails loudly where it comes too late).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

import optuna  # noqa: E402
import typer  # noqa: E402

from automl.config.methods import VoteMethod  # noqa: E402
from automl.config.schema import RUNG_PRUNERS, Config, load_config  # noqa: E402
from automl.config.storage_url import STORAGE_ENV, has_password  # noqa: E402
from automl.console import filter_stderr  # noqa: E402
from automl.errors import EXIT_INPUT_ERROR, AutoMLError, error_line  # noqa: E402

if TYPE_CHECKING:  # only for annotations: the ensemble's modules load scikit-learn
    from automl.ensemble.manifest import EnsembleResult, Scores, TrialScores

app = typer.Typer(
    help="Optuna-driven AutoML for Keras image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}
T = TypeVar("T")

SpaceOption = Annotated[
    Path, typer.Option("--space", "-s", help="Search-space YAML file (see search_spaces/).")
]
StudyOption = Annotated[str, typer.Option("--study", help="Name of an existing study.")]
StudiesDirOption = Annotated[
    Path, typer.Option("--studies-dir", help="Folder that holds the studies.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a file value: KEY.PATH=VALUE (repeatable)."),
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only.")] = False,
) -> None:
    _state["debug"] = debug
    _setup_logging(logging.WARNING if quiet else logging.INFO)


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("automl")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TensorFlow's retracing notices (one per loaded fold model) are noise for users.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; turn automl's errors into one line on stderr and exit status 2."""
    try:
        return action()
    except AutoMLError as exc:
        if _state["debug"]:
            raise
        _refuse(str(exc))
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: finished trials are saved, and a running trial is queued again with "
            "its finished folds; run the same command to resume.",
            err=True,
        )
        raise typer.Exit(130) from None


def _device_first() -> None:
    """Memory growth on every GPU before a command loads or builds a model (``nn.fit``)."""
    from automl.nn.fit import memory_growth  # imports TensorFlow

    _run(memory_growth)


def _refuse(message: str) -> NoReturn:
    """Stop with the input-error contract of ``automl.errors``: one ``error:`` line, status 2."""
    typer.echo(error_line(message), err=True)
    raise typer.Exit(EXIT_INPUT_ERROR) from None


def _tune_overrides(
    overrides: list[str] | None,
    study_name: str | None,
    storage: str | None,
    n_trials: int | None,
    timeout: float | None,
    seed: int | None,
    studies_dir: Path | None,
) -> list[str]:
    items = list(overrides or [])
    for key, value in (
        ("study.name", study_name),
        ("study.storage", storage),
        ("study.n_trials", n_trials),
        ("study.timeout", timeout),
        ("study.seed", seed),
        ("study.studies_dir", str(studies_dir) if studies_dir else None),
    ):
        if value is not None:
            items.append(f"{key}={json.dumps(value)}")
    return items


def _warn_password_in_argv(ctx: typer.Context, storage: str | None) -> None:
    """Say so when ``--storage`` on the command line holds a password (``ps`` shows it)."""
    # By name: typer ships a click of its own, whose ParameterSource is not click's.
    source = getattr(ctx.get_parameter_source("storage"), "name", None)
    if source == "COMMANDLINE" and has_password(storage):
        typer.echo(
            "warning: --storage holds a password, which every user of this machine can read "
            f"with ps; export {STORAGE_ENV}=URL instead, or leave the password out of the URL "
            "and let the driver read PGPASSWORD or ~/.pgpass. It is never saved to disk.",
            err=True,
        )


@app.command()
def tune(
    ctx: typer.Context,
    space: SpaceOption,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study name.")] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            envvar=STORAGE_ENV,
            show_envvar=True,
            help="Optuna storage URL (default: embedded). Keep a password out of the command "
            f"line: {STORAGE_ENV}, PGPASSWORD or ~/.pgpass.",
        ),
    ] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Trials in total.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to run.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Study seed.")] = None,
    studies_dir: Annotated[
        Path | None, typer.Option("--studies-dir", help="Where studies live (default studies/).")
    ] = None,
    overrides: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker processes, one fresh process per trial."),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option("--gpus", help="One worker per listed GPU id, pinned to it: 0,1,2,3."),
    ] = None,
) -> None:
    """Start or resume a study: k-fold trials with pruning, then a summary."""
    from automl.search.session import best_summary
    from automl.search.tune import run_tune

    _warn_password_in_argv(ctx, storage)
    items = _tune_overrides(overrides, study_name, storage, n_trials, timeout, seed, studies_dir)
    config = _run(lambda: load_config(space, items))
    result = _run(lambda: run_tune(config, progress=progress, workers=workers, gpus=gpus))
    from automl.search.storage import storage_url_for_display

    counts = result.counts
    typer.echo(f"study:    {config.study.name} ({'resumed' if result.resumed else 'new'})")
    typer.echo(f"folder:   {result.paths.root}")
    typer.echo(f"storage:  {storage_url_for_display(config.study.storage, result.paths)}")
    typer.echo(
        f"trials:   {counts.complete} complete, {counts.pruned} pruned, "
        f"{counts.fail} failed ({result.ran} run now)"
    )
    best = best_summary(result.study)
    if best is None:
        typer.echo("best:     no completed trial yet")
    else:
        trial = best.trial
        std = f" ± {trial.cv_std:.4f}" if trial.cv_std is not None else ""
        typer.echo(f"best:     trial {trial.number}, {config.study.metric} {trial.value:.4f}{std}")
        typer.echo(f"params:   {json.dumps(trial.params, default=str)}")
        if best.pareto_size is not None:
            typer.echo(
                f"pareto:   {best.pareto_size} trial(s) on the {config.study.metric} vs latency "
                f"front: automl show --study {config.study.name}"
            )
    typer.echo(
        f"next:     automl dashboard --study {config.study.name}   |   "
        f"automl ensemble --study {config.study.name}"
    )


@app.command()
def validate(
    space: SpaceOption,
    overrides: SetOption = None,
    samples: Annotated[int, typer.Option(help="Configurations to sample and print.")] = 3,
) -> None:
    """Check the file and the data, print parameters and sample configurations; no training."""
    from automl.config.portfolio import warm_start_trials
    from automl.search.session import imbalance_warning, prepare_splits

    config = _run(lambda: load_config(space, list(overrides or [])))
    splits = _run(lambda: prepare_splits(config))
    typer.echo(
        f"{space}: valid. Study '{config.study.name}', metric {config.study.metric} "
        f"({config.study.direction}), sampler {config.study.sampler.name}, "
        f"pruner {config.study.pruner.name}."
    )
    counts = dict(
        zip(
            splits.tuning.class_names, _counts(splits.tuning.labels, splits.n_classes), strict=True
        )
    )
    typer.echo(
        f"data:     {len(splits.tuning)} tuning images in {len(splits.folds)} folds, "
        f"{len(splits.holdout) if splits.holdout is not None else 0} hold-out, "
        f"{config.data.image_size} px; per class {counts}"
    )
    for note in splits.tuning.reading_notes():  # hidden files skipped, wide pixels scaled
        typer.echo(f"data:     {note}")
    imbalance = imbalance_warning(config, splits)
    if imbalance is not None:
        typer.echo(f"warning:  {imbalance}")
    typer.echo(_pruner_line(config))
    typer.echo(_training_line(config))
    typer.echo(_ensemble_line(config))
    warm = warm_start_trials(config.space, config.study.enqueue, config.study.warm_start)
    typer.echo(
        f"warm start ({config.study.warm_start}): {len(warm)} trial(s) enqueued before the "
        "sampler" + (":" if warm else "")
    )
    for queued in warm:
        typer.echo(f"  {queued.origin}: {json.dumps(queued.params, default=str)}")
    typer.echo("parameters:")
    for name, dist in config.space.param_distributions().items():
        typer.echo(f"  {name}: {_describe(dist)}")
    sampler = optuna.samplers.RandomSampler(seed=config.study.seed)
    study = optuna.create_study(sampler=sampler, direction=config.study.direction)
    for i in range(samples):
        trial = study.ask()
        typer.echo(f"sample {i}: {json.dumps(config.space.suggest(trial), default=str)}")
        study.tell(trial, 0.0)


def _pruner_line(config: Config) -> str:
    from automl.search.pruning import rung_options

    pruner = config.study.pruner
    if pruner.name == "none":
        return "pruner:   none (every trial trains all its folds)"
    if pruner.name not in RUNG_PRUNERS:
        return f"pruner:   {pruner.name} {pruner.options}, asked at every fold and epoch"
    stride = config.space.max_epochs()
    options = rung_options(pruner.name, pruner.options, stride)
    return (
        f"pruner:   {pruner.name} {options}, rungs inside fold 0 only (its {stride} epochs; a "
        "rung at step s is decided after epoch s+1); later folds are not pruned"
    )


def _training_line(config: Config) -> str:
    training = config.training
    patience = training.early_stopping_patience
    stopping = "off"
    if patience:
        stopping = f"after {patience} flat epochs, counted {_patience_start(config)}, " + (
            "best epoch's weights restored (out-of-fold scores optimistic)"
            if training.restore_best_weights
            else "last epoch's weights kept"
        )
    return (
        f"training: early stopping {stopping}, mixed precision {training.mixed_precision}, "
        f"jit_compile {training.jit_compile}, deterministic {training.deterministic}"
    )


def _patience_start(config: Config) -> str:
    """When early stopping starts counting, in words (from the space's schedule and epochs)."""
    from automl.config.recipe import patience_start_epoch

    top = config.space.top
    schedule, epochs, warmup = top["schedule"], top["epochs"], top["warmup_epochs"]
    if not all(isinstance(v, (int, str)) for v in (schedule, epochs, warmup)):
        return (
            "after the warm-up; under cosine from the middle of the decay, under "
            "cosine_restarts from the middle of the last cycle"
        )
    start = patience_start_epoch(dict(top), int(epochs))
    where = {
        "cosine": "the middle of the cosine decay",
        "cosine_restarts": "the middle of the last restart cycle",
    }.get(str(schedule), "the end of the warm-up" if warmup else "the first epoch")
    return f"from epoch {start + 1} of {epochs} ({where})"


def _ensemble_line(config: Config) -> str:
    from automl.config.methods import SelectionMethod

    ensemble = config.ensemble
    top_k = ensemble.selection is SelectionMethod.TOP_K
    chosen = f"top {ensemble.top_k}" if top_k else str(ensemble.selection)
    extras = "".join(
        f", {name} {value}"
        for name, value in (
            ("positive class", ensemble.positive_class),
            ("target recall", ensemble.target_recall),
        )
        if value is not None
    )
    return f"ensemble: {chosen} selection, {ensemble.vote} vote{extras}"


def _describe(dist: optuna.distributions.BaseDistribution) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"categorical {list(dist.choices)}"
    if not isinstance(
        dist, (optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution)
    ):
        return repr(dist)  # automl's spaces build only these three kinds
    kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
    extra = " log" if dist.log else (f" step {dist.step}" if dist.step not in (None, 1) else "")
    return f"{kind} [{dist.low}, {dist.high}]{extra}"


def _counts(labels: Any, n: int) -> list[int]:
    import numpy as np

    return [int(c) for c in np.bincount(labels, minlength=n)]


def _open(study: str, studies_dir: Path) -> tuple[Config, optuna.Study]:
    from automl.search.storage import load_study

    return _run(lambda: load_study(study, studies_dir))


@app.command()
def show(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    top: Annotated[int | None, typer.Option(help="Show only the best N completed.")] = None,
) -> None:
    """Leaderboard: trial, state, CV mean ± std, per-fold scores, params."""
    from automl.search.storage import counts_by_state, leaderboard

    config, optuna_study = _open(study, studies_dir)
    rows = leaderboard(optuna_study)  # the one best-first order (search/ranking.py)
    if top is not None:
        rows = [r for r in rows if r.complete][:top]
    typer.echo(f"{'trial':>5}  {'state':<8}  {config.study.metric:>16}  {'folds':<30}  params")
    for r in rows:
        value = "" if r.value is None else f"{r.value:.4f}"
        if r.cv_std is not None and r.value is not None:
            value += f" ± {r.cv_std:.4f}"
        folds = " ".join(f"{s:.3f}" for s in r.fold_scores)
        note = ""
        if r.state == "pruned":
            note = f" [pruned at step {r.pruned_at_step}]"
        elif r.state == "fail":
            note = f" [{r.fail_reason}]"
        if r.collapsed:
            note += f" [collapsed: {r.collapsed}; not ensembled]"
        if config.study.latency_objective and r.latency_ms is not None:
            note += f" [{r.latency_ms:.1f} ms/image" + (", Pareto front]" if r.pareto else "]")
        typer.echo(
            f"{r.number:>5}  {r.state:<8}  {value:>16}  {folds:<30}  "
            f"{json.dumps(r.params, default=str)}{note}"
        )
    counts = counts_by_state(optuna_study)
    typer.echo(
        f"{counts.complete} complete, {counts.pruned} pruned, {counts.fail} failed, "
        f"{counts.running} running"
    )


@app.command()
def ensemble(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    selection: Annotated[
        str | None,
        typer.Option(
            help="greedy (forward selection on out-of-fold scores) or top_k "
            "(default: the file's ensemble.selection; --top alone implies top_k)."
        ),
    ] = None,
    top: Annotated[
        int | None, typer.Option("--top", help="Trials in the ensemble (top_k selection).")
    ] = None,
    vote: Annotated[str | None, typer.Option(help=f"{' or '.join(VoteMethod.names())}.")] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Also score test-time augmentation (flips).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Select trials out-of-fold; their fold models vote, scored on the hold-out."""
    from automl.config.methods import SelectionMethod
    from automl.ensemble.build import run_ensemble
    from automl.search.paths import HOLDOUT_CONFUSION_PNG, MANIFEST, paths_for

    # Parsed here, before the study opens; the rules between them live in run_ensemble.
    if vote is not None:
        vote = _run(lambda: VoteMethod.parse(vote, "--vote"))
    if selection is not None:
        selection = _run(lambda: SelectionMethod.parse(selection, "--selection"))
    config, optuna_study = _open(study, studies_dir)
    _device_first()
    result = _run(
        lambda: run_ensemble(
            config,
            optuna_study,
            top_k=top,
            vote_method=vote,
            selection=selection,
            tta=tta,
            progress=progress,
        )
    )
    for line in _ensemble_lines(result):
        typer.echo(line)
    if result.shortfall:
        typer.echo(f"note:     {result.shortfall}")
    holdout = result.holdout
    chosen = result.threshold
    if chosen:
        line = (
            f"threshold: '{chosen.positive_class}' at p >= {chosen.threshold:.4f} for "
            f"recall {chosen.target_recall:g}: out-of-fold recall {chosen.recall:.4f}, "
            f"precision {chosen.precision:.4f}"
        )
        at = holdout.at_threshold if holdout else None
        if at:
            line += f"; hold-out recall {at.recall:.4f}, precision {at.precision:.4f}"
        typer.echo(line)
    out = paths_for(config).ensemble
    typer.echo(
        f"saved:    {out / MANIFEST}" + (f", {out / HOLDOUT_CONFUSION_PNG}" if holdout else "")
    )


def _ensemble_lines(result: EnsembleResult) -> list[str]:
    """Members with weights, the selection curve and the out-of-fold scores of ``ensemble``."""
    members = result.members
    lines = [
        f"ensemble: {len(members)} trials x folds = {result.n_models} models "
        f"({result.n_votes} votes), {result.vote} vote, "
        f"{result.selection} selection from {result.library_size} trials"
    ]

    def score(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines.append(f"members (trial x weight, CV and out-of-fold {result.metric}):")
    lines += [
        f"  #{m.trial} x{m.weight:<4}CV {m.cv_value:.4f}   out-of-fold {score(m.oof_score)}"
        for m in members
    ]
    if result.selection_curve:
        lines.append(f"selection: out-of-fold {result.metric} of the ensemble after each step")
        lines += [
            f"  step {step.step:>2}: +trial {step.trial:<6}{step.score:.4f}"
            for step in result.selection_curve
        ]
    oof, single = result.out_of_fold, result.out_of_fold_best_single_trial
    if oof:
        lines.append("out-of-fold (what the selection saw; optimistic):")
        lines += _score_table([("ensemble", oof)] + ([_best_row(single)] if single else []))
    holdout = result.holdout
    if holdout:
        lines.append(f"hold-out ({holdout.n_images} images):")
        rows = [("ensemble", holdout.ensemble), _best_row(holdout.best_single_trial)]
        if holdout.ensemble_tta:
            rows.append(("ensemble + TTA (flips)", holdout.ensemble_tta))
        lines += _score_table(rows)
    return lines


def _best_row(single: TrialScores) -> tuple[str, Scores]:
    return f"best trial #{single.trial}", single.scores


def _score_table(rows: list[tuple[str, Scores]]) -> list[str]:
    lines = [f"  {'':<22}{'accuracy':>10}{'balanced':>10}{'macro-F1':>10}"]
    lines += [
        f"  {label:<22}{s.accuracy:>10.4f}{s.balanced_accuracy:>10.4f}{s.macro_f1:>10.4f}"
        for label, s in rows
    ]
    return lines


@app.command()
def predict(
    study: StudyOption,
    input_path: Annotated[Path, typer.Option("--input", help="Image file or folder.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    studies_dir: StudiesDirOption = Path("studies"),
    output_format: Annotated[str, typer.Option("--format", help="csv or kaggle.")] = "csv",
    tta: Annotated[bool, typer.Option("--tta", help="Average over flips.")] = False,
    skip_unreadable: Annotated[
        bool, typer.Option("--skip-unreadable", help="Skip unreadable images with a warning.")
    ] = False,
    positive_class: Annotated[
        str | None, typer.Option(help="Binary tasks: the positive class.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Binary: label positive at p >= this (default: the ensemble's)."),
    ] = None,
    use_threshold: Annotated[
        bool, typer.Option("--use-threshold/--no-threshold", help="Apply a decision threshold.")
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Predict images with the study's ensemble: CSV with probabilities, or a Kaggle file."""
    from automl.ensemble.predict import run_predict

    config, _ = _open(study, studies_dir)
    _device_first()
    result = _run(
        lambda: run_predict(
            config,
            input_path,
            out,
            output_format=output_format,
            tta=tta,
            skip_unreadable=skip_unreadable,
            positive_class=positive_class,
            threshold=threshold,
            use_threshold=use_threshold,
            progress=progress,
        )
    )
    typer.echo(
        f"predicted {result.n_images} images with {result.n_models} models "
        f"({'with' if tta else 'no'} TTA): {result.class_counts}"
    )
    if result.threshold is not None:
        typer.echo(
            f"threshold: '{result.threshold.positive_class}' at p >= "
            f"{result.threshold.threshold:.4f}"
        )
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} unreadable files", err=True)
    typer.echo(f"saved:    {result.out.resolve()} ({output_format})")


@app.command()
def dashboard(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's own storage and artifacts (trial pictures)."""
    import optuna_dashboard

    from automl.search.artifacts import artifact_store
    from automl.search.paths import artifacts_root
    from automl.search.storage import open_storage

    config, _ = _open(study, studies_dir)
    storage = _run(lambda: open_storage(config))
    warning = _exposed_host_warning(host, port)
    if warning is not None:
        typer.echo(warning, err=True)
    typer.echo(
        f"optuna-dashboard for study '{config.study.name}': http://{host}:{port}/dashboard "
        "(Ctrl+C to stop)"
    )
    optuna_dashboard.run_server(
        storage, host=host, port=port, artifact_store=artifact_store(artifacts_root(config))
    )


def _exposed_host_warning(host: str, port: int) -> str | None:
    """What to say when the dashboard is bound to an address other machines can reach."""
    import ipaddress

    try:
        local = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: reachable by that name
        local = False
    if local:
        return None
    return (
        f"warning: --host {host} serves the dashboard to the network without any login: anyone "
        f"who reaches port {port} of this machine can read the study and change its notes. "
        f"Keep it local (--host 127.0.0.1) and from your computer open an SSH tunnel: ssh -N "
        f"-L {port}:127.0.0.1:{port} USER@THIS_MACHINE, then http://127.0.0.1:{port}/dashboard."
    )


@app.command()
def repair(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
) -> None:
    """Repair a study's journal after a torn write (a full disk): keep a copy, drop the torn line.

    Stop every process of the study first.
    """
    from automl.search.journal import repair_journal
    from automl.search.paths import StudyPaths

    journal = StudyPaths(studies_dir.expanduser().resolve() / study).journal
    result = _run(lambda: repair_journal(journal))
    if result.backup is None:
        typer.echo(f"journal:  {journal} has no torn line; nothing changed")
        return
    typer.echo(
        f"repaired: {journal}: {result.dropped_bytes} torn bytes dropped"
        + (
            f", record of line(s) {_numbers(result.salvaged_lines)} kept"
            if result.salvaged_lines
            else ""
        )
        + (f", line(s) {_numbers(result.dropped_lines)} dropped" if result.dropped_lines else "")
    )
    typer.echo(f"backup:   {result.backup}")
    typer.echo(f"next:     automl show --study {study} --studies-dir {studies_dir}")


def _numbers(numbers: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in numbers)


@app.command()
def report(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    top: Annotated[int, typer.Option(help="Trials in the parallel-coordinates plot.")] = 10,
) -> None:
    """Write one self-contained HTML report (plots, leaderboard, ensemble) and print its path."""
    from automl.report.html import build_report

    config, optuna_study = _open(study, studies_dir)
    path = _run(lambda: build_report(config, optuna_study, top=top))
    typer.echo(f"report:   {path}")


@app.command("export")
def export_model(
    study: StudyOption,
    out: Annotated[Path, typer.Option("--out", help="Model file to write (.keras).")],
    studies_dir: StudiesDirOption = Path("studies"),
) -> None:
    """Write the ensemble as one Keras model (fold models inside, averaging head)."""
    from automl.ensemble.export_model import export_ensemble

    config, _ = _open(study, studies_dir)
    _device_first()
    result = _run(lambda: export_ensemble(config, out))
    typer.echo(
        f"exported: {result.path.resolve()} ({result.n_models} fold models, "
        f"{result.n_params:,} parameters, {result.size_bytes / 1e6:.1f} MB)"
    )
    typer.echo(
        f"latency:  {result.latency_ms_per_image:.1f} ms per image on this machine (batch 1)"
    )
    if result.threshold is None:
        typer.echo(
            "load it:  keras.saving.load_model(path) - raw RGB 0-255 in (any size), "
            "probabilities out"
        )
    else:
        typer.echo(
            "load it:  keras.saving.load_model(path) - raw RGB 0-255 in (any size); outputs "
            "'probs' and 'label' (class index: "
            f"'{result.threshold.positive_class}' at p >= {result.threshold.threshold:.4f}, "
            "the ensemble's decision threshold)"
        )


@app.command()
def audit(
    space: Annotated[
        Path | None, typer.Option("--space", "-s", help="Search-space YAML file to audit.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Or: a folder of class folders (or images).")
    ] = None,
    data_format: Annotated[
        str, typer.Option("--format", help="With --data: folder, csv or npz.")
    ] = "folder",
    image_size: Annotated[
        int, typer.Option("--image-size", help="With --data: pixels for array formats.")
    ] = 96,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default studies/<name>/audit or audit/)."),
    ] = None,
    overrides: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Check the data before tuning: bad files, balance, duplicates, leakage, outliers."""
    from automl.config.schema import apply_overrides, config_from_dict
    from automl.data.audit.report import run_audit, summary_lines, write_reports
    from automl.search.paths import AUDIT_DIR, StudyPaths

    if (space is None) == (data is None):
        _refuse("give exactly one of --space FILE or --data PATH.")
    if space is not None:
        config = _run(lambda: load_config(space, list(overrides or [])))
        folder = out or StudyPaths(config.study.directory).audit
    else:
        raw = {"data": {"format": data_format, "path": str(data), "image_size": image_size}}
        raw = _run(lambda: apply_overrides(raw, list(overrides or []), source="--data"))
        config = _run(lambda: config_from_dict(raw, source="--data", default_name="audit"))
        folder = out or Path(AUDIT_DIR)
    result = _run(lambda: run_audit(config.data, seed=config.study.seed, progress=progress))
    paths = _run(lambda: write_reports(result, folder))
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"saved:      {paths['csv']}, {paths['json'].name}, {paths['html'].name}")


@app.command()
def worker(
    ctx: typer.Context,
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            envvar=STORAGE_ENV,
            show_envvar=True,
            help="The study's storage URL (joins from another machine). Keep a password out "
            f"of the command line: {STORAGE_ENV}, PGPASSWORD or ~/.pgpass.",
        ),
    ] = None,
    max_trials: Annotated[
        int | None, typer.Option("--max-trials", help="Run at most this many trials, then exit.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Join an existing study as one worker: run its trials until it has n_trials."""
    from automl.search.workers import load_worker_config, run_worker

    _warn_password_in_argv(ctx, storage)
    config = _run(lambda: load_worker_config(study, studies_dir, storage))
    ran = _run(lambda: run_worker(config, max_trials=max_trials, progress=progress))
    typer.echo(f"worker:   {ran} trial(s) run for study '{config.study.name}'")


def main() -> None:
    """Console-script entry point."""
    if "--debug" not in sys.argv[1:]:
        filter_stderr()  # TensorFlow's start-up lines; --debug shows everything
    app()


if __name__ == "__main__":
    main()
