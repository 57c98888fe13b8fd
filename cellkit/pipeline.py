"""The models of one slide analysis, chosen and loaded in one place (CLI, batch workers and the app).

:func:`resolve_models` turns what a user asked for (names, or nothing for the bundled defaults) into
model names and their sha256 from the cards, without loading any weights; :func:`load_models`
loads exactly those, so a batch job's workers run the models its main process recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cellkit.errors import CellkitError

NO_MODEL = "none"  # --rbc-model none: red cells are counted, not classified


@dataclass(frozen=True)
class ModelChoice:
    """Model names for an analysis: the detector, the white-cell classifier (None: detect and count only)
    and the red-cell model (None: none)."""

    detector: str
    classifier: str | None = None
    rbc_model: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)  # name -> the card's sha256 of its weights

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "classifier": self.classifier, "rbc_model": self.rbc_model,
                "sha256": dict(self.sha256)}  # fmt: skip


@dataclass
class Models:
    """Loaded models: ``analyze(image, m.detector, m.classifier, by_class=m.by_class)``."""

    detector: Any
    classifier: Any = None
    by_class: dict[str, Any] = field(default_factory=dict)


def resolve_models(
    classify: bool = True, detector: str | None = None, classifier: str | None = None, rbc_model: str | None = None
) -> ModelChoice:
    """The names (and card sha256) of the models an analysis would use; CellkitError for a name that is not
    there or a model of the wrong kind. ``rbc_model`` "none" turns red-cell labels off; None takes the bundled
    red-cell model when there is one."""
    from cellkit.models import default_spec, load_spec

    det = load_spec(detector) if detector is not None else default_spec("detector")
    if det.task != "detector":
        raise CellkitError(f"--detector {det.name}: it is a {det.task}, not a detector")
    sha = {det.name: str(det.card.get("sha256", ""))}
    if not classify:
        return ModelChoice(det.name, sha256=sha)
    clf = load_spec(classifier) if classifier is not None else default_spec("classifier")
    if clf.task != "classifier":
        raise CellkitError(f"--classifier {clf.name}: it is a {clf.task}, not a classifier")
    if "wbc" not in clf.applies_to:
        raise CellkitError(f"--classifier {clf.name}: it classifies {clf.applies_to} boxes, not wbc")
    sha[clf.name] = str(clf.card.get("sha256", ""))
    red = None
    if rbc_model != NO_MODEL:
        spec = load_spec(rbc_model) if rbc_model is not None else default_red_cell_spec()
        if spec is not None:
            if spec.task != "classifier" or "rbc" not in spec.applies_to:
                raise CellkitError(f"--rbc-model {spec.name}: it classifies {spec.applies_to} boxes, not rbc")
            red = spec.name
            sha[red] = str(spec.card.get("sha256", ""))
    return ModelChoice(det.name, clf.name, red, sha)


def default_red_cell_spec() -> Any:
    """The red-cell model used when none is named: the one marked default, else the first by name; None when
    no red-cell model is installed."""
    from cellkit.models import list_specs

    specs = list_specs(task="classifier", cell_type="rbc")
    return next((s for s in specs if s.card.get("default")), specs[0] if specs else None)


def load_models(choice: ModelChoice) -> Models:
    """Load the models of ``choice`` (weights checked against their cards' sha256 by the loaders)."""
    from cellkit.classify import load_classifier
    from cellkit.detect import load_detector

    det = load_detector(choice.detector)
    clf = load_classifier(choice.classifier) if choice.classifier else None
    by_class = {"rbc": load_classifier(choice.rbc_model)} if choice.rbc_model else {}
    return Models(det, clf, by_class)
