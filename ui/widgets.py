"""Small widget helpers returning plain values."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from cellkit.words import count

# --- user-supplied text (every page) --------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~$^&:])")
_LINE_START = re.compile(r"^(\s*)(\d+[.)]|[-=])")
_WJ = "\u2060"  # WORD JOINER: invisible, breaks GFM autolinks (http://, www., a@b.c) and :emoji: codes


def plain_number(value: object, digits: int | None = None) -> str:
    """A table cell as text: a dash for a missing value, numbers with ``digits`` decimals (else as short as
    exact), anything else as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    return f"{value:.{digits}f}" if digits is not None else f"{value:g}"


def plain(text: object) -> str:
    """Any user-supplied string (file, zip-member or folder name, note, a message embedding one) as
    Markdown that renders as exactly that text: no links, emphasis, headings, HTML, math, colours,
    icons or emoji. Use it for every such string passed to st.markdown/error/warning/caption/… and
    to labels of expanders and tabs; st.text/st.code/st.dataframe need nothing.
    """
    s = " ".join(str(text).splitlines())  # a newline could start a heading, a list or a table
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], s)
    # GFM autolinks and emoji codes are found in the text after escapes are undone: break their patterns
    s = s.replace(":", ":" + _WJ).replace("@", "@" + _WJ)
    return re.sub(r"(?i)(www)\.", r"\1" + _WJ + ".", s)


def percent_column() -> dict:
    """``column_config`` for a table's "%" column: one decimal, as the differential bar and the PDF print it."""
    import streamlit as st

    return {"%": st.column_config.NumberColumn("%", format="%.1f")}


def sentence(text: object) -> str:
    """A message as a sentence: its first word capitalised when it is an ordinary word ("sign-off needs …" →
    "Sign-off needs …"); a message that starts with a file name, an id or a quote stays as written."""
    s = str(text)
    head = s.split(": ", 1)[0] if ": " in s else ""
    if "/" in head or re.search(r"\.[A-Za-z][A-Za-z0-9]{1,4}\b", head):  # "sample 1.png: …" starts with a file
        return s
    return s[0].upper() + s[1:] if re.match(r"[a-z][a-z'-]*(?=[ ,])", s) else s


def error(message: object, icon: str = ":material/error:") -> None:
    """One error on the page: ``message`` (a CellkitError or text, often holding user names) as a plain sentence."""
    import streamlit as st

    st.error(plain(sentence(message)), icon=icon)


def upload_limit_mb() -> int:
    """Largest upload in MB (``CELLKIT_MAX_UPLOAD_MB``): pass it to st.file_uploader(max_upload_size=…)."""
    from cellkit import config

    return config.max_upload_mb()


def apply_upload_limit() -> int:
    """Make Streamlit's own upload cap (``server.maxUploadSize``, read per upload request) follow
    ``CELLKIT_MAX_UPLOAD_MB``, so a client that skips the browser's check is refused by the server too."""
    from streamlit import config as st_config

    limit = upload_limit_mb()
    if st_config.get_option("server.maxUploadSize") != limit:
        st_config.set_option("server.maxUploadSize", limit, "CELLKIT_MAX_UPLOAD_MB")
    return limit


def oversized(files) -> list:
    """Uploads above the limit (checked again here: the browser's check alone can be skipped)."""
    limit = upload_limit_mb() * 1024 * 1024
    return [f for f in files if f is not None and f.size > limit]


def refuse_oversized(files) -> list:
    """The uploads within the limit; one st.error per file above it."""
    import streamlit as st

    big = oversized(files)
    for f in big:
        st.error(
            f"{plain(f.name)}: {f.size / 2**20:.1f} MB is over the upload limit of {upload_limit_mb()} MB "
            "(CELLKIT_MAX_UPLOAD_MB)",
            icon=":material/error:",
        )
    return [f for f in files if f is not None and all(f is not b for b in big)]


@dataclass(frozen=True)
class KeptUpload:
    """An uploaded file kept in the session (name and bytes), read like Streamlit's UploadedFile."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return self.data


KEPT_UPLOAD_BYTES = 50 * 2**20  # a session keeps at most this much of a page's last upload


def uploader_is_new(uploader_key: str) -> bool:
    """Call before drawing an uploader: True when it has no state yet, i.e. its page was just opened (Streamlit
    drops a widget's state when a run does not draw it, as when the user visits another page)."""
    import streamlit as st

    return uploader_key not in st.session_state


def kept_uploads(files: list, key: str, page_opened: bool = True) -> list:
    """The files of this upload, kept in the session so that the page shows them again after a visit to another
    page (Streamlit forgets an uploader's files when its page is left); the last kept ones while the uploader is
    empty, with a button to forget them. Uploads over :data:`KEPT_UPLOAD_BYTES` together are not kept.

    ``page_opened`` (:func:`uploader_is_new` before the uploader was drawn): False when the page was already open,
    so an uploader that had files in the previous run and has none now was emptied by the user: its kept files are
    forgotten too, never shown again as if still uploaded."""
    import streamlit as st

    state = st.session_state
    had, state[f"{key}_had"] = state.get(f"{key}_had", False), bool(files)
    if files:
        if sum(f.size for f in files) <= KEPT_UPLOAD_BYTES:
            state[key] = [KeptUpload(f.name, f.getvalue()) for f in files]
        else:
            state.pop(key, None)
        return files
    if had and not page_opened:  # removed from the uploader, on this page: gone
        state.pop(key, None)
        return []
    kept = state.get(key) or []
    if kept:
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.caption(f"Your last upload ({count(len(kept), 'file')}), kept while you visited other pages.")
        if right.button("Clear", key=f"{key}_clear", icon=":material/close:"):
            state.pop(key, None)
            st.rerun()
    return list(kept)


# --- Home page helpers (app-shell owner) ---------------------------------------------------------


def page_link_ui(page: str, label: str, icon: str) -> None:
    """st.page_link to a page of the app; plain bold text when the page is not registered (page run alone)."""
    import streamlit as st
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"**{icon} {label}**")


KEY_METRICS = {  # dotted path in a model card's metrics -> short label (detector, then classifier cards)
    "mAP50": "mAP50",
    "mAP50_95": "mAP50-95",
    "per_class.wbc.mAP50": "WBC mAP50",
    "pbc8.macro_f1": "macro-F1 8 classes",
    "leaf.macro_f1": "macro-F1 leaves",
    "calibration.ece_leaf": "ECE",
}


def metrics_summary(card: dict, limit: int = 3) -> str:
    """Headline test metrics of a model card (``metrics`` or ``metrics_test``) as ``label value``."""
    metrics = card.get("metrics") or card.get("metrics_test")
    if not isinstance(metrics, dict):
        return "—"
    flat: dict[str, float] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix] = float(value)
        elif isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)

    walk("", metrics)
    known = [(label, flat[key]) for key, label in KEY_METRICS.items() if key in flat]
    chosen = (known or list(flat.items()))[:limit]
    return ", ".join(f"{k} {v:.3g}" for k, v in chosen) or "—"


def short_sha256(spec: object, n: int = 12) -> str:
    """Short sha256 of a model's weights: from its card, else hashed from the file; '—' when missing."""
    from cellkit.models import sha256_file

    digest = getattr(spec, "card", {}).get("sha256")
    if not digest:
        path = spec.weights_path  # type: ignore[attr-defined]
        if not path.is_file():
            return "weights missing"
        digest = sha256_file(path)
    return str(digest)[:n]


def masked_db_url(url: str) -> str:
    """A database URL with its password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable CELLKIT_DB_URL)"


# --- Slide page helpers (slide owner) ------------------------------------------------------------
SLIDE_COLOURS = {"wbc": "#7b2cbf", "rbc": "#d62828", "platelet": "#2a9d8f"}


def login_configured() -> bool:
    """Whether Streamlit's OIDC login (``st.login``) is set up in ``.streamlit/secrets.toml`` (``[auth]``)."""
    import streamlit as st

    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: single-user mode
        return False


def reviewer_name() -> str:
    """Who reviews in this browser, for the audit trail and the report: the signed-in user with login; else the
    name typed in the sidebar ("" when none was: never the account running the dashboard)."""
    import streamlit as st

    if login_configured():
        return app_user()
    return " ".join(str(st.session_state.get("reviewer_name") or "").split())


UNNAMED_REVIEWER = "reviewer not named"  # who a review step is logged under when no name was typed: never the account


def review_author() -> str:
    """Who a review step (correction, added cell) is logged under: :func:`reviewer_name`, else
    :data:`UNNAMED_REVIEWER` (an empty author would be stored as the account running the dashboard)."""
    return reviewer_name() or UNNAMED_REVIEWER


def reviewer_ui() -> None:
    """Single-user mode: the reviewer's name in the sidebar, so corrections are logged under a person, not under
    the account running the dashboard ("root"). With login the signed-in user is the reviewer."""
    import streamlit as st

    if not login_configured():
        st.sidebar.text_input("Reviewer", key="reviewer_name", placeholder="Your name, for the audit trail",
                              help="Corrections, added cells and sign-offs are recorded under this name.")  # fmt: skip


def app_user() -> str:
    """Who this browser's work belongs to: the signed-in user's e-mail when login is configured, else the account
    running the dashboard (single-user mode). Analyses, cases and batch jobs are stored and listed under it, so
    they come back after a reload or the next day; with login, a user sees only their own."""
    import getpass

    import streamlit as st

    try:
        if login_configured() and st.user.get("is_logged_in", False):
            return str(st.user.get("email") or st.user.get("sub"))
    except Exception:  # st.user without an auth provider
        pass
    return getpass.getuser()


def session_owner() -> str:
    """The owner of this session's analyses (:func:`app_user`), kept in the session state."""
    import streamlit as st

    return st.session_state.setdefault("owner", app_user())


def login_gate() -> None:
    """With login configured, stop every page until the user signs in (and offer to sign out); else nothing."""
    import streamlit as st

    if not login_configured():
        return
    if not st.user.get("is_logged_in", False):
        st.title("cellkit")
        st.info("This dashboard is shared: sign in to see your own analyses.", icon=":material/lock:")
        st.button("Sign in", on_click=st.login, icon=":material/login:", key="login")
        st.stop()
    st.sidebar.caption(f"Signed in as {plain(app_user())}")
    st.sidebar.button("Sign out", on_click=st.logout, key="logout")


def slide_figure(image, result, max_side: int = 1600, taxonomy=None):
    """Plotly figure: the smear (downscaled for display) with one outline trace per class and hover text.

    Legend and hover text use display names ("White cell", "Segmented neutrophil"), never ids.
    """
    import base64

    import cv2
    import numpy as np
    import plotly.graph_objects as go

    from cellkit.io import encode_png

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))  # a 100000 x 1 field is still one pixel high
    shown = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if s < 1 else image
    uri = "data:image/png;base64," + base64.b64encode(encode_png(shown)).decode()
    fig = go.Figure(go.Image(source=uri, dx=1 / s, dy=1 / s, hoverinfo="skip"))
    d, labels, shown = result.detections, result.labels(), result.shown_as()
    for cid, cls in enumerate(d.class_names):
        idx = np.flatnonzero(d.class_id == cid)
        if not len(idx):
            continue
        xs, ys = [], []
        for x1, y1, x2, y2 in d.xyxy[idx].tolist():
            xs += [x1, x2, x2, x1, x1, None]
            ys += [y1, y1, y2, y2, y1, None]
        colour, name = SLIDE_COLOURS.get(cls, "#333"), label_name(None, cls)
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=1.5), name=name, hoverinfo="skip")
        cx, cy = (d.xyxy[idx, 0] + d.xyxy[idx, 2]) / 2, (d.xyxy[idx, 1] + d.xyxy[idx, 3]) / 2
        text = []
        for i in idx:
            label = shown[i] if labels[i] != cls else ""  # display names of every model's labels
            text.append(f"#{i} {name} {d.confidence[i]:.2f}" + (f"<br>{label}" if label else ""))
        fig.add_scatter(
            x=cx,
            y=cy,
            mode="markers",
            marker=dict(size=6, color=colour, opacity=0.01),
            name=name,
            text=text,
            hoverinfo="text",
            showlegend=False,
        )
    fig.update_layout(margin=dict(l=0, r=0, t=10, b=0), height=560, legend=dict(orientation="h"), dragmode="zoom")
    fig.update_xaxes(visible=False, range=[0, w])
    fig.update_yaxes(visible=False, range=[h, 0], scaleanchor="x")
    return fig


SUNBURST_MIN_SHARE = 0.002  # wedges under 0.2 % of the circle are not drawn (under a degree of arc)


def probability_sunburst(taxonomy, node_probs):
    """Sunburst of one cell's probabilities through the taxonomy (parents = sums of their leaves)."""
    import plotly.graph_objects as go

    every = list(taxonomy.ids)
    probs_of = {i: max(0.0, float(p)) if p == p else 0.0 for i, p in zip(every, node_probs, strict=True)}  # NaN: 0
    leaves = set(taxonomy.leaves)
    shown = {i: 0.0 for i in every}  # each node's share of the chart: the sum of its leaves
    for leaf in leaves:
        for node in taxonomy.path(leaf):
            shown[node] += probs_of[leaf]
    total = sum(probs_of[i] for i in leaves) or 1.0
    # a wedge too thin to see is left out: plotly still drew its white border, a spike at 3 o'clock
    ids = [i for i in every if shown[i] >= SUNBURST_MIN_SHARE * total]
    probs = [probs_of[i] for i in ids]
    # sizes from the leaves only ("remainder": a parent is the sum of its children). With "total", a parent whose
    # float32 probability was a hair below its children's sum drew an empty chart.
    fig = go.Figure(
        go.Sunburst(
            ids=ids,
            labels=[taxonomy.node(i).name for i in ids],
            parents=[taxonomy.parent(i) or "" for i in ids],
            values=[p if i in leaves else 0.0 for i, p in zip(ids, probs, strict=True)],
            customdata=probs,
            branchvalues="remainder",
            hovertemplate="%{label}: %{customdata:.3f}<extra></extra>",
            maxdepth=4,
        )
    )
    fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), height=340)
    return fig


def label_name(taxonomy, label: str) -> str:
    """What a label is called on screen: the node's name, "Unidentified — review", or the detector class."""
    if taxonomy is not None:
        try:
            return taxonomy.display(label)
        except Exception:  # a detector class name ("wbc") or a label of another taxonomy
            pass
    return {"wbc": "White cell", "rbc": "Red cell", "platelet": "Platelet"}.get(
        label, label.replace("_", " ").capitalize()
    )


def class_colour(taxonomy, node: str) -> str:
    """The class's colour, the same on every chart (``Taxonomy.colour``); white-cell purple without a taxonomy."""
    try:
        return taxonomy.colour(node) if taxonomy is not None else SLIDE_COLOURS["wbc"]
    except Exception:  # a node of another tree (e.g. an old analysis): the neutral colour
        return SLIDE_COLOURS["wbc"]


def top_leaves_bar(taxonomy, pred, k: int = 5):
    """Horizontal bars of a crop's k most probable leaves, each in its class colour, with the value as text."""
    import plotly.graph_objects as go

    leaves = sorted(taxonomy.leaves, key=pred.prob, reverse=True)[:k][::-1]
    probs = [pred.prob(lf) for lf in leaves]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=[taxonomy.display(lf) for lf in leaves],
            orientation="h",
            text=[f"{p:.2f}" for p in probs],
            textposition="auto",
            marker_color=[taxonomy.colour(lf) for lf in leaves],
        )
    )
    fig.update_layout(height=60 + 32 * len(leaves), margin=dict(l=0, r=0, t=25, b=0), title=f"Top-{k} leaves",
                      xaxis_range=[0, 1], xaxis_title="probability")  # fmt: skip
    return fig


def differential_bar(differential: dict, taxonomy=None):
    """Horizontal bar of the WBC differential (% with absolute counts as text), display names on the axis."""
    import plotly.graph_objects as go

    names = list(differential)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[differential[n]["percent"] for n in names],
            y=[label_name(taxonomy, n) for n in names],
            orientation="h",
            text=[f"{differential[n]['count']} ({differential[n]['percent']:.1f}%)" for n in names],
            marker_color=[class_colour(taxonomy, n) for n in names],
        )
    )
    height = max(150, 70 + 28 * len(names))  # room for the axis title under a single bar
    fig.update_layout(margin=dict(l=0, r=0, t=10, b=0), height=height, xaxis_title="% of white cells")
    return fig


def stored_analyses(store, owner: str) -> tuple[int, int]:
    """(analyses in the database, analyses of this user) for the Home page."""
    return int(store.count_analyses()), int(store.count_analyses(owner))


def cell_gallery_ui(image, result, clf, cells: list[int], per_group: int = 24) -> None:
    """Crops of the classified cells, grouped by their final label (reviewer's correction or model's)."""
    import streamlit as st

    from cellkit.crops import crop_box

    labels = result.labels()
    for group in sorted({labels[i] for i in cells}):
        members = [i for i in cells if labels[i] == group]
        st.markdown(f"**{result.display_name(group)}** ({len(members)})")
        crops = [crop_box(image, result.detections.xyxy[i], clf.spec.crop_scale) for i in members[:per_group]]
        st.image(crops, caption=[f"#{i}" for i in members[:per_group]], width=72)


def model_probs(result, taxonomy, index: int):
    """One cell's probabilities over ``taxonomy``'s ids, picked out of the result's side-by-side node columns."""
    import numpy as np

    cols = {n: j for j, n in enumerate(result.node_ids)}
    row = result.detections.data["node_probs"][index]
    return np.array([row[cols[n]] if n in cols else np.nan for n in taxonomy.ids], np.float32)


def cell_review_ui(
    image, result, clf, cells: list[int], key: str = "slide", locked: bool = False
) -> tuple[int, str, str] | None:
    """One cell: crop, probabilities through the tree, link to Explain, reclassify form (``key`` keeps the
    white-cell and red-cell reviews apart on one page).

    Returns (cell index, new label, note) when the reviewer saves a correction, else None.
    """
    import streamlit as st
    from streamlit.errors import StreamlitAPIException

    from cellkit.crops import crop_box

    labels = result.labels()
    tax = clf.taxonomy
    model_labels = result.detections.data["label"]
    # the options' text never changes with a correction: the browser keeps a selectbox's old text when only
    # format_func's output changes (streamlit#13788), so the current label is shown beside it instead
    pick = st.selectbox(
        "Cell", cells, format_func=lambda i: f"#{i} (model: {result.display_name(model_labels[i])})", key=f"{key}_cell"
    )
    crop = crop_box(image, result.detections.xyxy[pick], clf.spec.crop_scale)
    left, right = st.columns([1, 2])
    model_label = result.display_name(model_labels[pick])
    now = result.display_name(labels[pick])
    left.image(crop, caption=f"#{pick} model: {model_label}" + (f" · now: {now}" if now != model_label else ""),
               width=160)  # fmt: skip
    why = result.detections.data.get("review")
    if why is not None and why[pick]:  # why the model left this cell for review, in its own words
        left.caption(plain(f"Flagged: {why[pick]}"))
    if key == "slide" and left.button("Explain this cell", icon=":material/visibility:"):
        st.session_state["explain_crop"] = crop
        st.session_state["explain_model"] = clf.spec.name  # the model that analysed the field, not the sidebar's
        st.session_state["explain_label"] = now
        try:
            st.switch_page("app_pages/explain.py")
        except StreamlitAPIException:
            left.info("Crop handed to the Explain page; open it from the menu.")
    right.plotly_chart(probability_sunburst(tax, model_probs(result, tax, pick)), key=f"{key}_sunburst")
    with left.form(f"{key}_reclassify"):
        ids = list(tax.ids)
        leaf = result.detections.data["leaf"][pick]
        from cellkit.taxonomy import REJECTIONS

        choices = [*ids, *REJECTIONS]
        # a cell left for review starts with no choice: its best guess pre-selected became a reviewer's decision
        # with one click on "Save correction"
        start = choices.index(labels[pick]) if labels[pick] in choices else None
        # one widget per field, cell and current label: it always starts at this cell's label (a shared key kept the
        # previous cell's choice, and "Save correction" then relabelled this cell with it)
        cell_key = f"{result.image_sha256[:12]}_{pick}_{labels[pick]}"
        new = st.selectbox(
            "Reclassify as (or reject the box)",
            choices,
            index=start,
            format_func=lambda n: REJECTIONS.get(n) or tax.display(n),
            key=f"{key}_reclassify_as_{cell_key}",
            placeholder="Choose a cell type",  # the best guess goes below: a narrow column cut it off inside
            help=f"The model's best guess: {tax.display(leaf)}." if leaf in ids else None,
        )
        if leaf in ids and labels[pick] not in choices:
            st.caption(f"Best guess: {tax.display(leaf)}")
        note = st.text_input("Note (optional)", key=f"{key}_note_{cell_key}")
        if st.form_submit_button("Save correction", disabled=locked):
            if new is None:
                st.warning("Choose a cell type, or reject the box, before saving: nothing was saved.")
            elif new == labels[pick] and not note.strip():
                st.info(f"No change: the cell is already {now}. Nothing was saved.")
            else:
                return pick, new, note
    return None


# --- Explain page helpers (explainability owner) ------------------------------------------------
LOW_NODE_P = 0.2  # below this, a map explains what would make the cell look like the node, not why it is one


CLEARLY_FASTER = 1.05  # a map's deletion/insertion against random areas: below this ratio it is said to be no faster


def faithfulness_words(scores: dict, ref: dict) -> str:
    """Deletion/insertion AUCs in words a hematologist can use, the figures after them."""
    d, rd = scores["deletion_auc"], ref["random_deletion_auc"]
    i, ri = scores["insertion_auc"], ref["random_insertion_auc"]
    if d < rd and rd / max(d, 1e-3) >= CLEARLY_FASTER:
        faster = rd / max(d, 1e-3)
        words = f"Hiding the highlighted areas first lowers the score {faster:.1f}x faster than hiding random areas"
    else:  # "1.0x faster" said nothing: under 1.05x is no faster than chance
        words = "Hiding the highlighted areas lowers the score no faster than random areas: read little into this map"
    if i > ri and i / max(ri, 1e-3) >= CLEARLY_FASTER:
        words += f"; showing them alone brings it back {i / max(ri, 1e-3):.1f}x faster."
    else:
        words += "; showing them alone brings it back no faster than random areas."
    return f"{words} (deletion AUC {d:.2f} against {rd:.2f} random, insertion {i:.2f} against {ri:.2f})"


# --- model picker (app shell) ---------------------------------------------------------------------
def classifier_name() -> str | None:
    """The classifier chosen in the sidebar (None: the default model)."""
    import streamlit as st

    return st.session_state.get("classifier_name")


def model_picker_ui() -> None:
    """Sidebar choice of the white-cell classifier: bundled models and the ones adapted on this machine."""
    import streamlit as st

    from cellkit.models import default_spec, list_specs

    try:
        specs = list_specs(task="classifier", cell_type="wbc")  # red-cell models are not white-cell models
        default = default_spec("classifier").name
    except Exception:  # no models at all: the pages say so themselves
        return
    names = [s.name for s in specs]
    shown = {s.name: s.card.get("display_name") or s.name for s in specs}  # adapted models: the user's own name
    kinds = {s.name: ("bundled" if s.bundled else "adapted here") for s in specs}
    if "classifier_name" not in st.session_state and st.query_params.get("model") in names:
        st.session_state["classifier_name"] = st.query_params["model"]  # a reload keeps the choice (the URL has it)
    current = st.session_state.get("classifier_name") or default
    choice = st.sidebar.selectbox(
        "White-cell model",
        names,
        index=names.index(current) if current in names else names.index(default),
        format_func=lambda n: (
            f"{shown[n]}{' · default' if n == default else ''}" + ("" if kinds[n] == "bundled" else " · adapted here")
        ),
        help="Models adapted to your lab (`cellkit adapt`, or the Models page) appear here. "
        f"The command line takes the same model by name: `--model {current}`.",
        key="model_picker",
    )
    st.session_state["classifier_name"] = None if choice == default else choice
    if choice == default:
        st.query_params.pop("model", None)
    elif st.query_params.get("model") != choice:
        st.query_params["model"] = choice


def model_display_name(name: str | None) -> str:
    """What a model is called on screen (its card's display name), or its name when it is not installed."""
    from cellkit.models import list_specs

    if not name:
        return ""
    try:
        return next((s.card.get("display_name") or s.name for s in list_specs() if s.name == name), name)
    except Exception:  # a broken model folder: the name still says which model it was
        return name


def keep_images(images: dict, max_pixels: int, most: int = 5) -> None:
    """Forget the oldest of a session's kept images (insertion order) until at most ``most`` remain and all of
    them together hold at most ``max_pixels`` pixels; the newest is always kept."""
    total = sum(int(im.shape[0]) * int(im.shape[1]) for im in images.values())
    while len(images) > 1 and (len(images) > most or total > max_pixels):
        oldest = next(iter(images))
        total -= int(images[oldest].shape[0]) * int(images[oldest].shape[1])
        images.pop(oldest)


def thumbnail(image, max_side: int = 512):
    """An image made safe to show: at most ``max_side`` px on its longer side, and no thinner than 1:4.

    ``st.image`` encodes the array it is given as it is (JPEG stops at 65,500 px), then scales it to the
    width asked for (a 100000 x 1 crop shown 96 px wide would be 0 px high): either would end the page.
    A very thin image is padded with white to 1:4.
    """
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w, 1))
    if f < 1:
        image = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    short = -(-max(h, w) // 4)
    if min(h, w) >= short:
        return image
    out = np.full((max(h, short), max(w, short), *image.shape[2:]), 255, dtype=image.dtype)
    top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    out[top : top + h, left : left + w] = image
    return out
