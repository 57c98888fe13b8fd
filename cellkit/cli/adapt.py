"""CLI command ``cellkit adapt``: make a lab's own model from a few labelled crops, or unlabelled ones.

The new model lands in CELLKIT_HOME/models (never over a bundled one) and is then usable by name:
``cellkit classify ... --model NAME``, ``cellkit analyze ... --model NAME`` and the app's model picker.
The figures go to stdout; notes about the input go to stderr: crops skipped, and a warning for folders none of
whose crops could be used (a whole cell type the model is not taught). The exit code is 0 whenever a model was
saved, warnings or not: it is usable, and a script's re-run would be refused (the name exists) anyway.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def adapt_command(
    name: str = typer.Option(..., "--name", help="name of the new model (letters, digits, _ - .)"),
    labelled: list[Path] = typer.Option(
        None, "--labelled", help="folder or zip of <cell type>/<image> crops (e.g. the Slide page's reviewed zip)"
    ),
    unlabelled: list[Path] = typer.Option(
        None, "--unlabelled", help="folder or zip of the lab's crops without labels (their slide colour is used)"
    ),
    batchnorm: bool = typer.Option(
        False, "--batchnorm", help="also re-estimate BatchNorm statistics on the lab's crops (hurt on real labs: off)"
    ),
    base: str = typer.Option(None, "--base", help="model to start from (default: the bundled default classifier)"),
    folds: int = typer.Option(5, min=2, max=10, help="cross-validation folds for the before/after figures"),
    seed: int = typer.Option(0, min=0),
    threads: int = typer.Option(0, min=0, max=256, help="torch threads (0 = torch's default)"),
    replace: bool = typer.Option(False, "--replace", help="replace a model of this name made here before"),
) -> None:
    """Adapt a classifier to your lab; prints cross-validated before/after figures and saves the model."""
    import torch

    from cellkit.adapt import adapt, check_name, read_labelled, save_adapted, untaught_words
    from cellkit.classify import load_classifier
    from cellkit.errors import CellkitError, named
    from cellkit.io import iter_images
    from cellkit.models import default_spec

    if not labelled and not unlabelled:
        raise CellkitError("adapt: pass --labelled DIR_OR_ZIP (<cell type>/<image>), --unlabelled DIR_OR_ZIP, or both")
    check_name(name, replace)  # before any work
    if threads:
        torch.set_num_threads(threads)
    clf = load_classifier(base or default_spec("classifier", machine=False).name)  # never an adapted model unasked
    crops = read_labelled(list(labelled), clf.taxonomy) if labelled else None
    found = list(iter_images(list(unlabelled or [])))
    plain = [it.image for it in found if it.image is not None]
    if unlabelled and not plain:
        bad = next((named(it.name, it.error) for it in found if it.error), "no images found")
        raise CellkitError(f"--unlabelled: none of the {len(found)} file(s) could be read ({bad})")
    say = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    bad = [named(it.name, it.error) for it in found if it.error]
    if plain and bad:  # said, never dropped silently (as --labelled lists its skipped crops)
        say(f"--unlabelled: {len(bad)} of {len(found)} file(s) skipped, e.g. {bad[0]}")
    if crops is not None:  # notes about the input, before the work: stderr, never mixed into the figures on stdout
        for why in crops.skipped[:10]:
            say(f"skipped: {why}")
        if len(crops.skipped) > 10:
            say(f"… and {len(crops.skipped) - 10} more skipped")
        if crops.dropped:  # the model is still made and saved (exit 0): a whole cell type left out is said
            left = "; ".join(f"{folder}/ ({why})" for folder, why in crops.dropped.items())
            say(f"warning: {len(crops.dropped)} folder(s) gave no crops, so {name} is adapted without them: {left}")
    result = adapt(clf, name, crops, plain, folds=folds, seed=seed, progress=say, batchnorm=batchnorm)
    path = save_adapted(result, replace=replace)
    report = result.report
    tax = clf.taxonomy
    if crops is not None:
        counts = ", ".join(f"{tax.display(n)} {c}" for n, c in crops.counts().items())
        typer.echo(f"labelled crops: {counts}" + (f" ({len(crops.skipped)} skipped)" if crops.skipped else ""))
        cv = report["cross_validation"]
        if cv["folds"]:
            b, a = cv["before"], cv["after"]
            typer.echo(f"{cv['folds']}-fold cross-validation on these crops ({b['n']} held out in turn):")
            typer.echo(f"  {'':<24}{'before':>8}{'after':>8}")
            typer.echo(f"  {'balanced accuracy':<24}{b['balanced_accuracy']:>8.3f}{a['balanced_accuracy']:>8.3f}")
            typer.echo(f"  {'flagged for review':<24}{b['flagged_for_review']:>8.1%}{a['flagged_for_review']:>8.1%}")
            for node in b["per_class_recall"]:
                rb, ra = b["per_class_recall"][node], a["per_class_recall"][node]
                typer.echo(f"  {tax.display(node):<24}{rb:>8.2f}{ra:>8.2f}")
        else:
            typer.echo(f"no cross-validation: {cv['why']}")
    if report.get("advice"):
        typer.echo(report["advice"])
    if report.get("untaught"):
        say("warning: " + untaught_words(report["untaught"], clf.taxonomy))
    for step in report["steps"]:
        typer.echo(f"- {step}")
    typer.echo(f"saved {path} in {report['seconds']} s; use it with --model {name}")
    sys.stdout.flush()
    if crops is not None and crops.dropped:  # said again after the figures, which can run for a screen
        say(f"warning: {name} was saved without the crops of {', '.join(f + '/' for f in crops.dropped)} (see above)")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("adapt")(adapt_command)
