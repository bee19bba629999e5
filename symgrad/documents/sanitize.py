"""Keep user text from opening a tag in a document: an allow-list filter for MathML.

latex2mathml copies the text of `\\text{...}` into its output as it is, so a user function's
LaTeX such as `\\text{</math><script>...}` would reach the page as live HTML. Everything the
HTML renderer takes from latex2mathml passes through `mathml` here: the MathML elements and
attributes of the allow-lists below are written again (attribute values checked against a
pattern and re-escaped), every other tag, comment or declaration is written as escaped text,
and text is escaped. The element structure is kept balanced: an end tag that does not close
the innermost open element is text, and whatever is still open at the end is closed, so the
fragment can never close or open anything of the page around it. Inside a token element
(`mi`, `mn`, `mo`, `ms`, `mtext`) no element may start, since MathML Core gives them text only
and an HTML parser would treat a tag there as HTML.

The standard library's `html.parser` tokenises; nothing here imports latex2mathml, so the
document builders can call it on any fragment. (User LaTeX itself is checked when a function
is defined: `symgrad.symbolic.texnames.check_latex`.)
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from symgrad.symbolic.errors import SymgradError

#: MathML Core's presentation elements (no `maction`, no `annotation-xml`, which may hold HTML)
ELEMENTS = frozenset({
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "munder",
    "mover", "munderover", "mfrac", "msqrt", "mroot", "mstyle", "mpadded", "mphantom", "merror",
    "mtable", "mtr", "mtd", "mlabeledtr", "menclose", "mfenced", "mmultiscripts", "mprescripts",
    "none", "semantics", "annotation",
})
TOKENS = frozenset({"mi", "mn", "mo", "ms", "mtext", "annotation"})  # text only inside
_WORD = re.compile(r"[A-Za-z][A-Za-z -]*\Z")
_BOOL = re.compile(r"(true|false)\Z")
_LENGTH = re.compile(r"[+-]?[0-9]*\.?[0-9]+(em|ex|px|pt|mu|%)?( [+-]?[0-9]*\.?[0-9]+(em|ex|px|pt|mu|%)?)*\Z")
_COLOR = re.compile(r"(#[0-9A-Fa-f]{3,8}|[A-Za-z]+)\Z")
#: attribute -> the pattern its value must match; anything else is dropped
ATTRIBUTES = {
    "xmlns": re.compile(r"http://www\.w3\.org/1998/Math/MathML\Z"),
    "display": re.compile(r"(block|inline)\Z"), "displaystyle": _BOOL,
    "scriptlevel": re.compile(r"[+-]?[0-9]\Z"),
    "mathvariant": _WORD, "mathcolor": _COLOR, "mathbackground": _COLOR,
    "stretchy": _BOOL, "fence": _BOOL, "separator": _BOOL, "accent": _BOOL, "accentunder": _BOOL,
    "largeop": _BOOL, "movablelimits": _BOOL, "symmetric": _BOOL,
    "form": re.compile(r"(prefix|infix|postfix)\Z"),
    "lspace": _LENGTH, "rspace": _LENGTH, "width": _LENGTH, "height": _LENGTH, "depth": _LENGTH,
    "minsize": _LENGTH, "maxsize": _LENGTH, "voffset": _LENGTH, "linethickness": _LENGTH,
    "columnspacing": _LENGTH, "rowspacing": _LENGTH,
    "columnalign": _WORD, "rowalign": _WORD, "columnlines": _WORD, "rowlines": _WORD, "frame": _WORD,
    "notation": _WORD, "open": re.compile(r"[()\[\]{}|.]?\Z"), "close": re.compile(r"[()\[\]{}|.]?\Z"),
    "separators": re.compile(r"[,;. ]*\Z"),
}
_CHARREF = re.compile(r"(x[0-9A-Fa-f]{1,6}|[0-9]{1,7})\Z")
_ENTITY = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}\Z")


def mathml(fragment: str) -> str:
    """`fragment` with only allowed MathML elements and attributes left as markup."""
    parser = _Filter()
    parser.feed(fragment)
    parser.close()
    return parser.result()


class _Filter(HTMLParser):
    # `<script>` and `<style>` are tags to escape like any other, not the start of raw text
    CDATA_CONTENT_ELEMENTS = ()
    RCDATA_CONTENT_ELEMENTS = ()

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self.open: list[str] = []

    def result(self) -> str:
        self.out.extend(f"</{tag}>" for tag in reversed(self.open))
        self.open.clear()
        return "".join(self.out)

    def _allowed(self, tag: str) -> bool:
        return tag in ELEMENTS and not (self.open and self.open[-1] in TOKENS)

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]], end: str) -> str:
        kept = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs
                       if k in ATTRIBUTES and v is not None and ATTRIBUTES[k].match(v))
        return f"<{tag}{kept}{end}>"

    def handle_starttag(self, tag, attrs):  # noqa: D102
        if self._allowed(tag):
            self.out.append(self._tag(tag, attrs, ""))
            self.open.append(tag)
        else:
            self._text(self.get_starttag_text())

    def handle_startendtag(self, tag, attrs):  # noqa: D102
        if self._allowed(tag):
            self.out.append(self._tag(tag, attrs, " /"))
        else:
            self._text(self.get_starttag_text())

    def handle_endtag(self, tag):  # noqa: D102
        if self.open and self.open[-1] == tag:
            self.open.pop()
            self.out.append(f"</{tag}>")
        else:
            self._text(f"</{tag}>")

    def handle_data(self, data):  # noqa: D102
        self._text(data)

    def handle_charref(self, name):  # noqa: D102
        self.out.append(f"&#{name};" if _CHARREF.match(name) else html.escape(f"&#{name};"))

    def handle_entityref(self, name):  # noqa: D102
        self.out.append(f"&{name};" if _ENTITY.match(name) else html.escape(f"&{name};"))

    def handle_comment(self, data):  # noqa: D102
        self._text(f"<!--{data}-->")

    def handle_decl(self, decl):  # noqa: D102
        self._text(f"<!{decl}>")

    def handle_pi(self, data):  # noqa: D102
        self._text(f"<?{data}>")

    def unknown_decl(self, data):  # noqa: D102
        self._text(f"<![{data}]>")

    def _text(self, s: str) -> None:
        self.out.append(html.escape(s, quote=False))


def check_command(command: str) -> str:
    """The command line a document's header and footer cite (`symgrad doc PATH --out DIR`).

    It holds the user's paths and sits in an HTML or Markdown comment, a LaTeX `%` comment and
    an HTML `<code>`: a `<` or `>` could end the comment or open a tag, a line break could end
    the LaTeX comment. Such paths are refused rather than rewritten, so the cited command stays
    the one that writes the file again.
    """
    bad = next((c for c in command if c in "<>" or not c.isprintable()), None)
    if bad is not None:
        raise SymgradError(f"cannot write {bad!r} into a document (from the command {command!r}); "
                           "rename the model file or the --out folder")
    return command
