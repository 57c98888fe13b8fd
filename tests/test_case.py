"""A case of many fields: totals from the final labels, NRBC per 100 WBC, platelet estimate, target count."""

from __future__ import annotations

from _fakes import labelled_result

from cellkit.case import case_summary


def field(labels: list[str], classes: list[str], name: str):
    return labelled_result(labels, classes, name)


def test_case_totals_over_fields():
    a = field(["segmented_neutrophil", "lymphocyte", "erythroblast", "", "", "platelet"],
              ["wbc", "wbc", "wbc", "rbc", "rbc", "platelet"], "f1.png")  # fmt: skip
    b = field(["band_neutrophil", "unknown", "", "", "", ""], ["wbc", "wbc", "rbc", "rbc", "rbc", "rbc"], "f2.png")
    s = case_summary("P-17", [a, b], target_wbc=4)
    assert s["images"] == ["f1.png", "f2.png"] and s["fields"] == 2
    assert s["white_cells_counted"] == 4 and s["target_reached"]  # the erythroblast is not a white cell
    assert list(s["differential"]) == ["neutrophil", "lymphocyte", "unknown"]
    assert s["differential"]["neutrophil"] == {"count": 2, "percent": 50.0}
    assert s["nrbc"] == {"count": 1, "per_100_wbc": 25.0}
    assert s["rbc_per_field"] == 3.0 and s["platelets_per_field"] == 0.5
    assert s["platelets_per_1000_rbc"] == round(1000 / 6, 1) and s["unidentified_review"] == 1
    b.corrections[1] = "monocyte"  # a reviewer decides: the case follows
    assert case_summary("P-17", [a, b])["differential"]["monocyte"]["count"] == 1
    assert not case_summary("P-17", [a, b])["target_reached"]  # 4 of the default 100


def test_empty_case_has_no_differential():
    s = case_summary("none", [])
    assert s["differential"] == {} and s["nrbc"]["per_100_wbc"] is None and s["rbc_per_field"] is None


def test_red_cell_forms_add_up_over_the_fields_with_the_schistocyte_limit():
    a = field(["schistocyte", "normal", "normal", "lymphocyte"], ["rbc", "rbc", "rbc", "wbc"], "f1.png")
    b = field(["target_cell", "normal"], ["rbc", "rbc"], "f2.png")
    forms = {f["form"]: f for f in case_summary("R-1", [a, b])["red_cells"]}
    assert {k: v["count"] for k, v in forms.items()} == {"normal": 3, "schistocyte": 1, "target_cell": 1}
    assert forms["schistocyte"]["percent"] == 20.0 and "above 1 %" in forms["schistocyte"]["finding"]
    assert forms["schistocyte"]["provisional"]  # 5 red cells, not the 1,000 the limit is for
    assert case_summary("R-1", [field(["lymphocyte"], ["wbc"], "f3.png")])["red_cells"] == []


def test_thumbnails_say_what_each_cell_is_reported_as_and_what_the_model_said():
    import numpy as np

    from cellkit.case import case_thumbnails

    a = field(["lymphocyte", "unknown", "monocyte", "monocyte"], None, "field_07.png")
    a.corrections.update({0: "basophil", 3: "monocyte"})  # cell 3: a reviewer confirming the model's own label
    thumbs = case_thumbnails(np.full((40, 100, 3), 200, np.uint8), a)
    captions = [c for _, c in thumbs]
    assert captions == ["field_07 #0\nBasophil\nmodel: Lymphocyte", "field_07 #1\nUnidentified — review"]
    assert all(t.shape == (96, 96, 3) for t, _ in thumbs)


def test_the_differential_keeps_band_and_segmented_neutrophils_apart_under_their_group():
    a = field(["segmented_neutrophil", "band_neutrophil", "neutrophil", "lymphocyte", "myelocyte", "unknown"],
              None, "f1.png")  # fmt: skip
    b = field(["segmented_neutrophil", "reject_artefact"], None, "f2.png")
    s = case_summary("P-1", [a, b])
    assert s["differential"]["neutrophil"]["count"] == 4
    assert s["subtypes"] == {
        "neutrophil": {"band_neutrophil": 1, "neutrophil": 1, "segmented_neutrophil": 2},  # "neutrophil": unsure
        "myeloid_immature": {"myelocyte": 1},
    }  # a group whose cells carry only its own name (lymphocyte) has no sub-rows


def test_a_reviewers_label_of_another_class_moves_the_box_and_rejected_boxes_count_nowhere():
    r = field(["lymphocyte", "lymphocyte", "platelet", "platelet", "", "", "monocyte"],
              ["wbc", "wbc", "platelet", "wbc", "rbc", "rbc", "wbc"], "f.png")  # fmt: skip
    assert r.differential()["unknown"]["count"] == 1  # the model's "platelet" for a white-cell box: a person decides
    r.corrections.update({1: "platelet", 2: "lymphocyte", 3: "platelet", 4: "reject_artefact", 6: "erythroid"})
    assert r.reviewed_counts() == {"wbc": 3, "rbc": 1, "platelet": 2}  # the detector found 4 / 2 / 1
    assert r.counts == {"wbc": 4, "rbc": 2, "platelet": 1}
    assert r.differential() == {"lymphocyte": {"count": 2, "percent": 100.0}}  # no "unknown" left to decide
    assert r.nrbc() == {"count": 1, "per_100_wbc": 50.0}  # "Erythroid" is the erythroblast's parent: an NRBC
    s = case_summary("C", [r])
    # the NRBC among the white-cell boxes is counted apart, as on the Slide page and in a batch's summary.csv
    assert s["counted"] == {"wbc": 2, "nrbc": 1, "rbc": 1, "platelet": 2} and s["unidentified_review"] == 0
    assert s["counted"]["wbc"] == r.white_cells()
    assert s["platelets_per_1000_rbc"] == 2000.0
    assert (
        "Only 1 red cell counted: the platelet estimate is rough (one platelet moves it by 1000)"
        in s["platelet_caveat"]
    )
    assert s["rejected"] == {"reject_artefact": 1}


def test_case_subtypes_add_up_to_the_count_and_the_order_is_clinical_over_every_field():
    a = field(["segmented_neutrophil"] * 5 + ["basophil"], ["wbc"] * 6, "a.png")
    b = field(["neutrophil", "neutrophil", "monocyte", "lymphocyte"], ["wbc"] * 4, "b.png")
    s = case_summary("C", [a, b])
    assert list(s["differential"]) == ["neutrophil", "lymphocyte", "monocyte", "basophil"]
    assert s["differential"]["neutrophil"]["count"] == 7
    assert s["subtypes"]["neutrophil"] == {"neutrophil": 2, "segmented_neutrophil": 5}  # 2 "not subtyped"
    only_group = case_summary("C", [b])
    assert "neutrophil" not in only_group["subtypes"]  # no subtype at all: no sub-rows


def test_the_case_names_every_fields_nodes_whatever_the_first_field_had():
    from cellkit.case import case_display

    white_only = field(["lymphocyte"], ["wbc"], "a.png")
    with_red = field(["lymphocyte", "schistocyte"], ["wbc", "rbc"], "b.png")
    with_red.taxonomies = ("pbc", "rbc12")
    white_only.taxonomies = ("pbc",)
    display = case_display([white_only, with_red])
    assert display("schistocyte") == "Schistocyte" and display("lymphocyte") == "Lymphocyte"
    assert display("unknown") == "Unidentified — review"


def test_an_analysis_stored_with_an_older_grouping_counts_by_todays_rule():
    from cellkit.slide import SlideResult

    r = field(["lymphocyte", "monocyte"], ["wbc", "wbc"], "old.png")
    raw = r.to_dict()
    raw["groups"] = {**raw["groups"], "erythroid": "erythroid"}  # as saved before 2026-12-02
    old = SlideResult.from_dict(raw)
    old.corrections[1] = "erythroid"
    assert old.nrbc() == {"count": 1, "per_100_wbc": 100.0} and "erythroid" not in old.differential()


def test_a_cell_labelled_with_a_node_above_its_group_is_not_a_subtype():
    r = field(["lymphocyte", "lymphoid", "segmented_neutrophil", "neutrophil"], ["wbc"] * 4, "f.png")
    subtypes = r.subtypes(only_split=False)
    assert subtypes["lymphocyte"] == {"lymphocyte": 2}  # "Lymphoid" is not subtyped, not a subtype
    assert r.subtypes() == {"neutrophil": {"neutrophil": 1, "segmented_neutrophil": 1}}


def test_platelets_the_model_flagged_or_called_a_white_cell_are_said_until_a_person_decides():
    labels = ["segmented_neutrophil", "platelet", "unknown", "lymphocyte"]
    a = field(labels, ["wbc", "platelet", "platelet", "platelet"], "f1.png")
    assert a.platelets_to_review() == [2, 3]
    s = case_summary("P-1", [a])
    assert s["platelets_review"] == 2 and s["counted"]["platelet"] == 3  # counted as the detector's class meanwhile
    assert s["unidentified_review"] == 0  # a platelet box is not a white cell to review
    from cellkit.case import sign_off_concerns

    assert any("2 platelets were flagged or called a white cell" in c for c in sign_off_concerns(s))
    a.corrections[2] = "platelet"  # a reviewer checked one
    a.corrections[3] = "lymphocyte"  # and moved the other into the differential
    s = case_summary("P-1", [a])
    assert a.platelets_to_review() == [] and s["platelets_review"] == 0
    assert s["differential"]["lymphocyte"]["count"] == 1 and s["counted"]["platelet"] == 2


def test_a_case_whose_fields_two_white_cell_models_analysed_says_so_and_names_both():
    a = field(["segmented_neutrophil"], ["wbc"], "f1.png")
    b = field(["lymphocyte"], ["wbc"], "f2.png")
    a.models["classifier"] = {"name": "classifier_lite0_v4", "display": "White cells, any lab (v4)", "sha256": "aa"}
    b.models["classifier"] = {"name": "classifier_lite0", "display": "White cells, PBC framing (v1)", "sha256": "bb"}
    s = case_summary("P-2", [a, b])
    assert [m["name"] for m in s["mixed_models"]["classifier"]] == ["classifier_lite0_v4", "classifier_lite0"]
    assert "more than one white-cell model: White cells, any lab (v4), White cells, PBC framing (v1)" in (
        s["mixed_models_warning"])  # fmt: skip
    assert "detector" not in s["mixed_models"]  # one detector (the same sha256) is not mixed
    from cellkit.case import sign_off_concerns

    assert "the fields were analysed with more than one white-cell model" in sign_off_concerns(s)
    one = case_summary("P-3", [a])
    assert one["mixed_models"] == {} and one["mixed_models_warning"] == ""


def test_red_cell_forms_of_an_off_scale_field_are_left_out_and_each_field_has_its_own_ratio():
    """The case withheld every field's forms and quoted only the first off-scale field's ratio."""
    from types import SimpleNamespace

    from _fakes import result_with_red_cells

    red_model = SimpleNamespace(card={"reference_cell_px": {"median": 80.0}})
    fields = []
    for name, side in (("ok.png", 80), ("big.png", 240), ("bigger.png", 320)):
        r = result_with_red_cells(side)
        r.name = name
        for i in range(20):
            r.corrections[i] = "burr_cell" if i < 5 else "normal"
        fields.append(r)
    s = case_summary("S-3", fields, red_cell_spec=red_model)
    assert not s["red_cells_withheld"]
    assert "big.png, bigger.png" in s["red_cells_left_out"] and "3.0x–4.0x" in s["red_cells_left_out"]
    assert sum(f["count"] for f in s["red_cells"]) == 20  # only the field at the model's scale
    s = case_summary("S-3", fields[1:], red_cell_spec=red_model)
    assert "3.0x–4.0x" in s["red_cells_withheld"] and "2 fields" in s["red_cells_withheld"]
    assert not s["red_cells_left_out"] and sum(f["count"] for f in s["red_cells"]) == 40
    unclassified = result_with_red_cells(320)  # analysed without a red-cell model: no forms to leave out
    unclassified.name = "plain.png"
    s = case_summary("S-3", [fields[0], unclassified], red_cell_spec=red_model)
    assert not s["red_cells_left_out"] and not s["red_cells_withheld"]
