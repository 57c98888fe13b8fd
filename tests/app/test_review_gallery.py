"""The review gallery (ui/review.py) on a labelled field, without any model: how boxes are grouped."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _gallery() -> None:
    from types import SimpleNamespace

    import numpy as np
    from _fakes import labelled_result

    from ui.review import gallery_ui

    result = labelled_result(["lymphocyte", "lymphocyte", "unknown", "platelet"], ["wbc", "platelet", "platelet",
                             "platelet"], "f.png")  # fmt: skip
    image = np.full((40, 100, 3), 200, np.uint8)
    gallery_ui(image, result, SimpleNamespace(spec=SimpleNamespace(crop_scale=1.5)), [0, 1, 2, 3], key="t")


def test_platelet_boxes_the_model_called_a_white_cell_are_grouped_apart_and_say_how_they_count():
    """A platelet box the model called a lymphocyte stood among the lymphocytes, while the counts made it a
    platelet; a flagged one was already grouped apart."""
    at = AppTest.from_function(_gallery, default_timeout=60).run()
    assert not at.exception
    headings = sorted(md.value for md in at.markdown)
    assert headings == [
        "**Lymphocyte · platelet boxes, counted as platelets until decided** (1)",
        "**Lymphocyte** (1)",
        "**Platelet** (1)",
        "**Unidentified — review · platelet boxes, counted as platelets until decided** (1)",
    ]


def _guesses() -> None:
    from types import SimpleNamespace

    import numpy as np
    from _fakes import labelled_result

    from ui.review import gallery_ui

    result = labelled_result(["burr_cell", "normal"], ["rbc", "rbc"], "f.png")
    clf = SimpleNamespace(spec=SimpleNamespace(crop_scale=1.5))
    gallery_ui(np.full((40, 100, 3), 200, np.uint8), result, clf, [0, 1], key="t", guesses=True)


def test_withheld_forms_are_grouped_as_the_model_s_guesses_never_as_findings():
    """The Red cells tab said the forms were withheld, then listed "Burr cell (1)" as if counted."""
    at = AppTest.from_function(_guesses, default_timeout=60).run()
    assert not at.exception
    assert all(md.value.startswith("**Model's guess: ") for md in at.markdown) and len(at.markdown) == 2
