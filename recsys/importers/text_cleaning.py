"""Clean scraped item text (titles, descriptions, abstracts) as polars expressions.

Public dumps carry the HTML they were scraped from: most Amazon 2018 Magazine Subscriptions
titles are just ``<span class="a-size-medium a-color-secondary a-text-normal`` (a tag cut before
its ``>``), descriptions hold ``<br>``, ``&amp;`` and ``&#8217;``. Left in, that text is what the
text encoder embeds and what the demo shows, so every importer cleans it the same way here.

Everything is vectorised except entity decoding, which needs Python's :func:`html.unescape`
(the HTML5 entity table is 2,000 names): it runs only on the values holding ``&``.
"""

from __future__ import annotations

import html

import polars as pl

__all__ = ["HEADLINE_CHARS", "clean_text", "headline", "markup_removed", "squish"]

HEADLINE_CHARS = 120
"""A title made from a description is cut to at most this many characters, at a word boundary."""

# A complete tag, comment or doctype: "<" then a letter, "/", "!" or "?" (so "a < b" and "<3" stay).
_TAG = r"<[A-Za-z/!?][^>]*>"
# A tag cut before its ">" at the end of the text, as scraped titles are. Only known element
# names count, so that a title like "Tom <and Jerry" keeps its words; the quote may be unclosed too.
_ELEMENTS = ("a|abbr|b|big|blockquote|body|br|button|center|code|dd|div|dl|dt|em|font|form|h[1-6]|head|hr|html|i|"
             "iframe|img|input|label|li|link|meta|ol|p|pre|s|script|section|small|span|strike|strong|style|sub|"
             "sup|table|tbody|td|th|thead|tr|tt|u|ul|video")
_CUT_TAG = rf"(?i)</?(?:{_ELEMENTS})(?:[\s/][^>]*)?$"
# Markup escaped as entities (``&lt;br /&gt;``) is markup once decoded; "&lt;SPF 15&gt;" is text, so known names only.
_ESCAPED_TAG = rf"(?i)</?(?:{_ELEMENTS})\b[^<>]*>"
# One pass for whitespace: runs of 2+, or a lone tab/newline/nbsp (``\s+`` rewrites every space: 3x slower).
_SPACES = r"\s{2,}|[^\S ]"
_UNESCAPE_ROUNDS = 3  # "&amp;amp;" (escaped twice) is common in Amazon text; three rounds undo any real case


def squish(expr: pl.Expr) -> pl.Expr:
    """Whitespace collapsed and stripped, empty text null: the text as a reader sees it, markup and all.

    Comparing it with :func:`clean_text` tells whether cleaning changed more than whitespace.
    """
    return expr.str.replace_all(_SPACES, " ").str.strip_chars().replace("", None)  # not when/then: evaluates once


def clean_text(expr: pl.Expr) -> pl.Expr:
    """Tags (complete or cut at the end) removed, every HTML entity decoded, whitespace collapsed; empty is null.

    Tags become a space, so ``<p>a</p><p>b</p>`` reads ``a b`` rather than ``ab``.
    """
    stripped = expr.str.replace_all(_TAG, " ").str.replace_all(_CUT_TAG, " ")
    decoded = stripped.map_batches(_unescape, return_dtype=pl.String(), is_elementwise=True)
    return squish(decoded)


def markup_removed(raw: pl.Expr, cleaned: pl.Expr) -> pl.Expr:
    """True where cleaning changed more than whitespace: a tag went, or an entity was decoded (null-safe)."""
    return squish(raw).ne_missing(cleaned)


def headline(expr: pl.Expr, max_chars: int = HEADLINE_CHARS) -> pl.Expr:
    """A short title from clean text: its first sentence, cut to ``max_chars`` at a word boundary.

    A sentence ends at ``.``, ``!`` or ``?`` before a capital letter, after at least 10
    characters (so "Vol. 3" or "Dr. Who" do not end it); the final full stop is dropped.
    """
    sentence = pl.coalesce(expr.str.extract(r"^(.{10,}?[.!?])\s+\p{Lu}"), expr).str.strip_suffix(".")
    cut = (sentence.str.slice(0, max_chars + 1).str.replace(r"\s+\S*$", "").str.slice(0, max_chars)
           .str.strip_chars_end(" ,;:-"))
    return pl.when(sentence.str.len_chars() > max_chars).then(cut).otherwise(sentence).replace("", None)


def _unescape(values: pl.Series) -> pl.Series:
    """Decode entities in the values holding ``&`` (the rest are returned untouched, without Python).

    Decoding can reveal markup that was escaped (``&lt;br&gt;``): tags of known elements are removed again.
    """
    holds = values.str.contains("&", literal=True).fill_null(False)
    if not holds.any():
        return values
    at = holds.arg_true()
    fixed = []
    for text in values.gather(at).to_list():
        for _ in range(_UNESCAPE_ROUNDS):
            decoded = html.unescape(text)
            if decoded == text:
                break
            text = decoded
        fixed.append(text)
    return values.clone().scatter(at, pl.Series(fixed, dtype=pl.String()).str.replace_all(_ESCAPED_TAG, " "))
