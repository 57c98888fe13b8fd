"""ui.widgets.plain: every user-supplied string is shown as plain text, never as Markdown or HTML."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.app._markdown import shows_literally  # noqa: E402
from ui.widgets import plain  # noqa: E402

NASTY = [
    "[click](http://evil)",
    "[click](http://evil).png",
    "**x**",
    "__x__ _y_ *z*",
    "cell_1.png",
    "![img](http://evil/x.png)",
    "<a href='http://evil'>x</a>",
    "<script>alert(1)</script>",
    "# heading",
    "1. first",
    "- item",
    "+ item",
    "> quote",
    "`code`",
    "~~gone~~",
    "a | b\n--|--\nc | d",
    "line\n===",
    "http://evil.example/x",
    "www.evil.example",
    "me@evil.example",
    ":red[red] :smile: :material/home:",
    "$x^2$ costs $5",
    "&amp; &lt;b&gt;",
    "back\\slash \\*",
    "[ref]: http://evil",
    "<http://evil>",
    "cellkit: photo (1).png",
]


@pytest.mark.parametrize("text", NASTY)
def test_user_text_renders_literally(text):
    assert shows_literally(plain(text), text), plain(text)


def test_the_checker_catches_markdown():
    assert not shows_literally("[click](http://evil)", "[click](http://evil)")
    assert not shows_literally("**x**", "**x**")
    assert not shows_literally("see http://evil", "see http://evil")


def test_plain_accepts_any_object():
    assert shows_literally(plain(ValueError("bad [x](y)")), "bad [x](y)")
    assert shows_literally(plain(Path("/data/a_b")), "/data/a_b")


def test_plain_number_shows_a_dash_for_a_missing_value():
    import numpy as np

    from ui.widgets import plain_number

    assert [plain_number(v) for v in (None, float("nan"), np.float64("nan"))] == ["—"] * 3
    assert plain_number(0.8402, 3) == "0.840" and plain_number(np.float32(0.5), 3) == "0.500"
    assert plain_number(8.55) == "8.55" and plain_number(np.int64(112)) == "112" and plain_number(256.0) == "256"
    assert plain_number("ImageNet") == "ImageNet" and plain_number(True) == "True"


def test_the_probability_sunburst_is_sized_by_its_leaves_so_rounding_never_blanks_it():
    """Plotly draws nothing when a parent's "total" is below its children's sum; float32 rounding made that happen."""
    import numpy as np

    from cellkit.taxonomy import load_taxonomy
    from ui.widgets import probability_sunburst

    tax = load_taxonomy("pbc")
    leaf = np.zeros(len(tax.leaves), np.float32)
    leaf[tax.leaves.index("basophil")], leaf[tax.leaves.index("eosinophil")] = 0.99664420, 0.00335580
    probs = tax.node_matrix @ leaf
    probs[tax.ids.index("myeloid")] = np.nextafter(probs[tax.ids.index("myeloid")], 0, dtype=np.float32)  # a hair low
    trace = probability_sunburst(tax, probs).data[0]
    assert trace.branchvalues == "remainder"
    sizes = dict(zip(trace.ids, trace.values, strict=True))
    assert all(sizes[n] == 0 for n in trace.ids if n not in tax.leaves)  # parents add up their children exactly
    # nodes of probability 0 are not drawn at all: their borders made a white spike at 3 o'clock
    assert "lymphocyte" not in trace.ids and "eosinophil" in trace.ids and set(trace.parents) <= {"", *trace.ids}
    assert sizes["basophil"] == float(leaf[tax.leaves.index("basophil")])
    assert dict(zip(trace.ids, trace.customdata, strict=True))["myeloid"] == float(probs[tax.ids.index("myeloid")])


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("sign-off needs the reviewer's name", "Sign-off needs the reviewer's name"),
        ("case 'c1' changed since its counts were read", "Case 'c1' changed since its counts were read"),
        ("smear.png: cannot be read", "smear.png: cannot be read"),  # a file name stays as written
        ("sample 1.png: cannot be read", "sample 1.png: cannot be read"),
        ("field 2/x.tif, page 3: no image", "field 2/x.tif, page 3: no image"),
        ("cannot save the analysis: the database is busy", "Cannot save the analysis: the database is busy"),
        (
            "adapting helped (balanced accuracy 0.500 -> 0.900): use it",
            "Adapting helped (balanced accuracy 0.500 -> 0.900): use it",
        ),
        ("node_probs: expected finite probabilities", "node_probs: expected finite probabilities"),
        ("'lab b' is taken", "'lab b' is taken"),
        ("Already a sentence.", "Already a sentence."),
        ("", ""),
    ],
)
def test_error_messages_are_shown_as_sentences(message, shown):
    from ui.widgets import sentence

    assert sentence(message) == shown


def test_a_map_barely_faster_than_random_areas_is_said_to_be_no_faster():
    """Explain said "1.0x faster than hiding random areas": a ratio that says nothing."""
    from ui.widgets import faithfulness_words

    ref = {"random_deletion_auc": 0.50, "random_insertion_auc": 0.50}
    close = faithfulness_words({"deletion_auc": 0.49, "insertion_auc": 0.51}, ref)
    assert "no faster than random areas" in close and "1.0x" not in close
    clear = faithfulness_words({"deletion_auc": 0.25, "insertion_auc": 0.75}, ref)
    assert "2.0x faster than hiding random areas" in clear and "back 1.5x faster" in clear
