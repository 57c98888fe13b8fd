"""One spec per model: architecture, input size, mean/std, labels, target layer, weights.

The spec is stored as a JSON model card beside the weights (``weights/<name>.json``), so the
preprocessing used at inference is always the one used in training. Cards also carry the data,
split, metrics, sha256 and the exact training command.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.taxonomy import DEFAULT_TAXONOMY

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a model's name is its file name: no paths


def model_id(display: str) -> str:
    """A model name (file-safe id) from what a person calls it: "Lab B May-Grünwald" -> ``lab_b_may-grunwald``."""
    import unicodedata

    text = unicodedata.normalize("NFKD", str(display or "")).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9_.-]+", "_", text.strip().lower()).strip("_.-")[:64].rstrip("_.-")
    if not slug:
        raise CellkitError(
            f"model name: expected some Latin letters or digits (the file name is made of them), got {display!r}"
        )
    return slug


def check_model_name(name: str, option: str = "model name") -> str:
    """``name`` if it can name a model's files (letters, digits, '_', '-', '.'; no folder, not hidden)."""
    if not NAME_RULE.match(name or ""):
        raise CellkitError(f"{option}: expected letters, digits, '_', '-' or '.' (up to 64), got {name!r}")
    return name


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, Any] = {
    "name": str, "task": str, "arch": str, "weights": str, "input_size": int, "labels": list, "mean": list,
    "std": list, "taxonomy": str, "target_layer": str, "temperature": _NUMBER, "crop_scale": _NUMBER,
    "crop_reference": str, "view": _NUMBER, "resample_size": int, "background": list, "source_background": list,
    "framing": str, "threshold": _NUMBER, "applies_to": list, "ood": dict, "card": dict,
}  # fmt: skip
_ITEM_TYPES: dict[str, Any] = {
    "labels": str, "applies_to": str, "mean": _NUMBER, "std": _NUMBER, "background": _NUMBER,
    "source_background": _NUMBER,
}  # fmt: skip
_KIND_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", _NUMBER: "a number"}
_ITEM_NAMES = {str: "strings", _NUMBER: "numbers"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it correctly."""

    name: str
    task: str  # "classifier" | "detector"
    arch: str
    weights: str  # file name inside the weights folder
    input_size: int
    labels: list[str]  # classifier: leaf ids in output order; detector: class names
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    taxonomy: str = DEFAULT_TAXONOMY
    target_layer: str = ""  # module path for CAM methods, e.g. "conv_head"
    temperature: float = 1.0  # calibration: logits / temperature
    crop_scale: float = 2.0  # crops cut from smears: side = crop_scale x the cell's box side (PBC framing)
    crop_reference: str = "cell"  # "cell": crop_scale x the cell's own box; "slide": x the slide's median red
    # cell (size stays visible: a macrocyte fills more of its crop than a normal cell; cellkit.rbc_boxes)
    view: float = 1.0  # centre fraction of a crop the network sees (< 1 zooms in on the cell)
    resample_size: int = 0  # px the framed, viewed crop is resized to first (the training cache), then to
    # input_size; 0 = straight to input_size. Training resamples from its cache, so inference must too.
    background: list[float] = field(default_factory=list)  # RGB slide background of the training data:
    # when set, crops are white-balanced to it before the network (cellkit.colour); empty = no normalisation
    source_background: list[float] = field(default_factory=list)  # a lab's own slide background (cellkit adapt):
    # when set, every crop is balanced from it to `background` with the same gains, instead of per-crop estimates
    framing: str = ""  # "nucleus": every crop is re-framed around its white cell first (cellkit.framing)
    threshold: float = 0.5  # deepest-confident-node threshold
    applies_to: list[str] = field(default_factory=lambda: ["wbc", "platelet"])  # classifier: the detector classes
    # whose boxes it classifies (cards made before this field are white-cell models); a red-cell model: ["rbc"]
    ood: dict[str, Any] = field(default_factory=dict)  # statistics for the OOD score
    card: dict[str, Any] = field(default_factory=dict)  # data, split, metrics, sha256, command, ...
    folder: str = field(default="", compare=False, repr=False)  # where the card was read from (not saved)

    def __post_init__(self) -> None:
        for key, kind in _FIELD_TYPES.items():  # a hand-edited card: a wrong type is a one-line error
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise CellkitError(f"model {self.name!r}: {key} must be {_KIND_NAMES[kind]}, got {value!r}")
        for key, kind in _ITEM_TYPES.items():
            if any(isinstance(v, bool) or not isinstance(v, kind) for v in getattr(self, key)):
                raise CellkitError(
                    f"model {self.name!r}: {key} must hold {_ITEM_NAMES[kind]}, got {getattr(self, key)}"
                )
        if Path(self.weights).name != self.weights or self.weights in (".", ".."):
            raise CellkitError(
                f"model {self.name!r}: weights must be a file name beside the card, got {self.weights!r}"
            )
        if self.task not in ("classifier", "detector"):
            raise CellkitError(f"model {self.name!r}: task must be 'classifier' or 'detector', got {self.task!r}")
        if self.input_size <= 0:
            raise CellkitError(f"model {self.name!r}: input_size must be positive, got {self.input_size}")
        if self.crop_reference not in ("cell", "slide"):
            raise CellkitError(
                f"model {self.name!r}: crop_reference must be 'cell' or 'slide', got {self.crop_reference!r}"
            )
        if int(self.resample_size) < 0:
            raise CellkitError(
                f"model {self.name!r}: resample_size must be 0 or a pixel size, got {self.resample_size}"
            )
        if not 0.2 <= float(self.view) <= 1.0:
            raise CellkitError(f"model {self.name!r}: view must be in [0.2, 1], got {self.view}")
        for key in ("background", "source_background"):
            value = getattr(self, key)
            if value and (len(value) != 3 or not all(0 < v <= 255 for v in value)):
                raise CellkitError(f"model {self.name!r}: {key} must be 3 RGB values in (0, 255], got {value}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise CellkitError(f"model {self.name!r}: expected 3 mean/std values, got {self.mean}/{self.std}")

    @property
    def weights_path(self) -> Path:
        return weights_dir_for(self, self.folder or None)

    @property
    def bundled(self) -> bool:
        """True for the models shipped in the weights folder, False for ones made on this machine."""
        return not self.folder or Path(self.folder).resolve() == config.weights_dir().resolve()

    @property
    def adapted(self) -> bool:
        """True for a model made on this machine by ``cellkit adapt`` (kept in CELLKIT_HOME/models)."""
        if self.card.get("adapted_from"):
            return True
        try:
            return bool(self.folder) and Path(self.folder).resolve() == config.user_models_dir().resolve()
        except (OSError, RuntimeError):
            return False

    @property
    def card_path(self) -> Path:
        """The JSON card this spec was read from (or would be saved to)."""
        return Path(self.folder or config.weights_dir()) / f"{self.name}.json"

    def to_json(self) -> str:
        raw = asdict(self)
        raw.pop("folder")
        return json.dumps(raw, indent=2, sort_keys=False)

    def save(self, folder: str | Path | None = None) -> Path:
        folder = Path(folder or config.weights_dir())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        from cellkit.writes import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("name", "task", "arch", "weights", "input_size", "labels") if k not in raw]
        if missing:
            raise CellkitError(f"model card is missing {missing}; regenerate it with `cellkit train`")
        name = raw.get("name")
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except CellkitError:
            raise
        except (TypeError, ValueError) as exc:  # what the field checks did not foresee
            raise CellkitError(f"model card {name!r} is not valid: {exc}") from None


def weights_dir_for(spec: ModelSpec, folder: str | Path | None = None) -> Path:
    return Path(folder or config.weights_dir()) / spec.weights


def model_folders(folder: str | Path | None = None) -> list[Path]:
    """Where models are looked for: ``folder`` alone when given, else the bundled weights then CELLKIT_HOME/models."""
    if folder:
        return [Path(folder)]
    return [config.weights_dir(), config.user_models_dir()]


def _read_card(path: Path) -> ModelSpec:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CellkitError(f"model card {path} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CellkitError(f"model card {path}: expected a JSON object, got {type(raw).__name__}")
    spec = ModelSpec.from_dict(raw)
    spec.folder = str(path.parent)
    return spec


def check_model_ref(name_or_path: str | Path) -> str:
    """``name_or_path`` if it names a model (:data:`NAME_RULE`) or is the path of a ``.json`` card; CellkitError
    otherwise. A name is never a path: ``../x`` joined to the weights folder read a card from elsewhere, and an
    empty name quietly meant the default model."""
    text = str(name_or_path)
    if Path(text).suffix == ".json" or NAME_RULE.match(text):
        return text
    if not text.strip():
        raise CellkitError(
            "model name: expected a model's name or the path of its .json card, got an empty one "
            "(leave the option out for the default model)"
        )
    raise CellkitError(
        f"model name {text!r}: a model is named by letters, digits, '_', '-' or '.' (no folder, up to 64); "
        "give its name, or the path of its .json card"
    )


def load_spec(name_or_path: str | Path, folder: str | Path | None = None) -> ModelSpec:
    """Read a model card by model name (bundled weights, then CELLKIT_HOME/models) or by path to its JSON
    (:func:`check_model_ref`: anything else is refused, never looked for)."""
    path = Path(check_model_ref(name_or_path))
    if path.suffix == ".json":
        if not path.is_file():
            raise CellkitError(f"model card {path} not found")
        return _read_card(path)
    for where in model_folders(folder):
        candidate = where / f"{name_or_path}.json"
        if candidate.is_file():
            return _read_card(candidate)
    have = ", ".join(s.name for s in list_specs(folder)) or "none"
    where = " or ".join(str(f) for f in model_folders(folder))
    raise CellkitError(
        f"model {str(name_or_path)!r} not found in {where} (available: {have}); "
        "train one with `cellkit train` or make one with `cellkit adapt`"
    )


def list_specs(
    folder: str | Path | None = None, task: str | None = None, cell_type: str | None = None
) -> list[ModelSpec]:
    """All readable model cards (optionally of one task, and of classifiers for one detector class such as
    ``"wbc"``): bundled ones first, then the user's, each by name."""
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for where in model_folders(folder):
        for path in sorted(where.glob("*.json")) if where.is_dir() else []:
            try:
                spec = _read_card(path)
            except (CellkitError, TypeError):
                continue
            if spec.name in seen or (task is not None and spec.task != task):
                continue
            if cell_type is not None and (spec.task != "classifier" or cell_type not in spec.applies_to):
                continue
            seen.add(spec.name)
            specs.append(spec)
    return specs


def default_spec(
    task: str, folder: str | Path | None = None, cell_type: str | None = None, machine: bool = True
) -> ModelSpec:
    """The model of a task marked ``card["default"]``, else the first one by name; a classifier's default is the
    white-cell one unless ``cell_type`` names another detector class (``"rbc"``). ``machine``: the white-cell model
    chosen as this machine's default (:func:`set_machine_default`) comes first, while it is installed."""
    if task == "classifier" and cell_type is None:
        cell_type = "wbc"
    chosen = machine_default() if machine and folder is None and task == "classifier" and cell_type == "wbc" else None
    if chosen:
        found = [s for s in list_specs(None, task, cell_type) if s.name == chosen]
        if found:
            return found[0]
    specs = [s for s in list_specs(folder, task, cell_type) if s.bundled or folder]
    if not specs:
        what = f"{task} for {cell_type} cells" if cell_type else task
        raise CellkitError(f"no {what} in {folder or config.weights_dir()}; train one with `cellkit train {task}`")
    marked = [s for s in specs if s.card.get("default")]
    return (marked or specs)[0]


def default_names() -> dict[str, str]:
    """The model used when none is named, per role: ``detector``, ``classifier`` (white cells, this machine's choice
    first) and ``classifier_rbc`` (red cells), for the roles that have a model. One rule for every list of models."""
    out = {}
    for role, task, cell_type in (("detector", "detector", None), ("classifier", "classifier", "wbc"),
                                  ("classifier_rbc", "classifier", "rbc")):  # fmt: skip
        try:
            out[role] = default_spec(task, cell_type=cell_type).name
        except CellkitError:
            continue
    return out


def _settings_path() -> Path:
    return config.home() / "settings.json"


def _settings() -> dict[str, Any]:
    try:
        data = json.loads(_settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: no machine settings
        return {}
    return data if isinstance(data, dict) else {}


def machine_default() -> str | None:
    """The name of the white-cell model chosen as this machine's default, or None (the bundled default)."""
    name = _settings().get("default_classifier")
    return name if isinstance(name, str) and name else None


def set_machine_default(name: str | None) -> None:
    """Make the white-cell model ``name`` the default of this machine (``CELLKIT_HOME/settings.json``) for the
    app and the command line; None goes back to the bundled default. Written atomically."""
    from cellkit.writes import atomic_write_text

    settings = _settings()
    if name is None:
        settings.pop("default_classifier", None)
    else:
        spec = load_spec(name)
        if spec.name not in {s.name for s in list_specs()}:  # a card given by its path: not installed, never found
            raise CellkitError(
                f"{name!r} is not an installed model: put it in {config.weights_dir()} or {config.user_models_dir()} "
                "(`cellkit adapt` saves there), then make it the default by its name"
            )
        if spec.task != "classifier" or "wbc" not in spec.applies_to:
            raise CellkitError(
                f"{name!r} is a {spec.task} model, not a white-cell classifier: it cannot be the default"
            )
        settings["default_classifier"] = spec.name
    atomic_write_text(_settings_path(), json.dumps(settings, indent=1) + "\n", fallback=False)  # one clear error


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
