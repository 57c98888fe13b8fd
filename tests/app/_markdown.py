"""How Streamlit's Markdown would show a string, close enough to test that user text stays plain text.

CommonMark (markdown-it-py, with GFM tables and strikethrough) for the syntax, plus the patterns Streamlit's
renderer applies to the text afterwards: GFM autolink literals (regexes copied from its bundled
mdast-util-gfm-autolink-literal), emoji / material-icon short codes, colour directives and math.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_AFTER_PARSE = [
    re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I),  # autolink literal
    re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"),  # e-mail autolink
    re.compile(r":[\w/-]+:"),  # :emoji: and :material/icon:
]
_DIRECTIVE = re.compile(r"(?<!\\):[a-z-]+\[")  # :red[...] is parsed from the source
_MATH = re.compile(r"(?<!\\)\$")  # $...$ is parsed from the source


def rendered(markdown: str) -> tuple[str, str]:
    """(html, visible text) of a Markdown string; invisible word joiners dropped from the text."""
    out = _MD.render(markdown)
    text = html.unescape(re.sub(r"<[^>]+>", "", out)).strip().replace("\u2060", "")
    return out, text


def visible(markdown: str) -> str:
    """The text a reader sees for a Markdown string (escapes undone, tags dropped)."""
    return rendered(markdown)[1]


def shows_literally(markdown: str, expected: str) -> bool:
    """True when ``markdown`` renders as exactly ``expected``: no link, emphasis, heading, list, HTML, ..."""
    out, text = rendered(markdown)
    tags = set(re.findall(r"<(\w+)", out)) - {"p"}
    visible = text.replace("\u2060", "")
    return (
        not tags
        and visible == " ".join(expected.splitlines()).strip()
        and not any(p.search(html.unescape(re.sub(r"<[^>]+>", "", out))) for p in _AFTER_PARSE)
        and not _DIRECTIVE.search(markdown)
        and not _MATH.search(markdown)
    )
