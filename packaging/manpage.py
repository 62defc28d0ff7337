"""Turn one page of etun's Markdown manual (docs/MANUAL.md, docs/CONFIG.md) into a roff manual page.

    python3 packaging/manpage.py docs/MANUAL.md build/man/etun.8

The manual uses a small part of Markdown, and this reads exactly that part: a first line
`# name(section) — what it is`, `##`/`###` headings, paragraphs, one-level `-` (or `1.`) lists,
pipe tables, fenced code, `inline code`, **bold**, *italic* and [links](FILE.md). Anything else
(deeper headings, nested lists, HTML) is refused with the line it is on, so the page never renders
differently from what its author saw. Links to MANUAL.md and CONFIG.md become etun(8) and
etun.toml(5); links to the other documents name where the package installs them.

Why not pandoc: Debian's pandoc pulls in far more than the rest of the build, and its roff output
needs post-editing to pass `man --warnings`; this file is the whole dependency, and the tests render
its output with `man --warnings` and lintian.
"""

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

DOC_DIR = "/usr/share/doc/etun"
PAGES = {"MANUAL.md": ("etun", "8"), "CONFIG.md": ("etun.toml", "5")}
SECTION_TITLES = {"1": "User Commands", "5": "File Formats Manual", "8": "System Manager's Manual"}
# groff names with ASCII fallbacks on every output device; other characters go out as \[uXXXX].
GLYPHS = {"—": r"\(em", "–": r"\(en", "→": r"\(->", "←": r"\(<-", "↔": r"\(<>", "≤": r"\(<=", "≥": r"\(>=",
          "×": r"\(mu", "µ": r"\(mc", "“": r"\(lq", "”": r"\(rq", "‘": r"\(oq", "’": r"\(cq", "…": "...",
          "±": r"\(+-", "≈": r"\(~~", "·": r"\(pc", "\u00a0": r"\~"}
SHORT_COLUMN = 24          # characters; a wider table column wraps as a text block
TABLE_ROOM = 72            # characters a table has in an 80-column terminal, after the indent
TITLE = re.compile(r"^# (?P<name>[\w.-]+)\((?P<section>\d)\) [—-]+ (?P<what>.+)$")
INLINE = re.compile(r"`(?P<code>[^`]+)`|\*\*(?P<bold>.+?)\*\*|(?<![\w*])\*(?P<italic>[^*\s][^*]*?)\*(?![\w*])"
                    r"|\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")


class ManualError(Exception):
    """A construct this converter does not render, with the file and line it is on."""


def escape(text: str, code: bool = False, breakable: bool = False) -> str:
    """Text as roff reads it: backslashes escaped, non-ASCII as groff glyphs, and in code every
    hyphen a real minus, so options copied from the page work. `breakable` code may wrap after
    / : , = (\\: breaks there without a hyphen), as long paths must in a narrow table column."""
    text = text.replace("\\", r"\e")
    if code:
        text = text.replace("-", r"\-")
    if breakable:
        text = re.sub(r"([/:,=])(?=.)", r"\1\\:", text)
    return "".join(GLYPHS.get(c, f"\\[u{ord(c):04X}]") if ord(c) > 126 else c for c in text)


def link(text: str, target: str) -> str:
    """A link as a reader of the installed page can follow it."""
    name = target.split("#", 1)[0]
    if name in PAGES:
        page, section = PAGES[name]
        ref = rf"\fB{escape(page)}\fR({section})"
        return ref if text in (name, f"{page}({section})") else f"{inline(text)} ({ref})"
    if re.fullmatch(r"[A-Z]+\.md", name):
        path = rf"\fI{escape(DOC_DIR)}/{name}\fR"
        return path if text == name else f"{inline(text)} ({path})"
    if re.match(r"https?://", target):
        return rf"{inline(text)} \fI{escape(target)}\fR"
    return inline(text)          # a path in the source tree or an anchor: the text says enough


def inline(text: str, breakable: bool = False) -> str:
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(escape(text[pos:m.start()]))
        if m["code"] is not None:
            out.append(rf"\fB{escape(m['code'], code=True, breakable=breakable)}\fR")
        elif m["bold"] is not None:
            out.append(rf"\fB{inline(m['bold'])}\fR")
        elif m["italic"] is not None:
            out.append(rf"\fI{inline(m['italic'])}\fR")
        else:
            out.append(link(m["text"], m["target"]))
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def text_line(roff: str) -> str:
    """A line of running text: one that would start with a control character is protected."""
    return rf"\&{roff}" if roff[:1] in (".", "'") else roff


def cells(line: str, where: str) -> list[str]:
    """The cells of a pipe-table row; a | inside `code` stays in its cell."""
    if not (line.startswith("|") and line.endswith("|")):
        raise ManualError(f"{where}: a table row must start and end with |")
    parts, cur, in_code = [], "", False
    for c in line[1:-1]:
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    parts.append(cur.strip())
    return parts


def visible(cell: str) -> int:
    """Roughly how many characters a cell takes on the page."""
    return len(re.sub(r"\]\([^)]*\)|[`*\[]", "", cell))


def table(rows: list[list[str]], where: str) -> list[str]:
    """A tbl table: a bold header row; short columns as they are, long ones as text blocks that
    share the rest of the line and wrap, left-adjusted (no stretched spaces in narrow columns)."""
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ManualError(f"{where}: every row of a table needs {width} cells")
    used = "".join(c for r in rows for c in r)
    tab = next(c for c in "|@#^~%" if c not in used)
    natural = [max(visible(r[col]) for r in rows) for col in range(width)]
    wrap = [n > SHORT_COLUMN for n in natural]
    # Short columns still must leave the wrapping ones room: wrap the widest until they do.
    while sum(n for n, w in zip(natural, wrap, strict=True) if not w) + 3 * (width - 1) > TABLE_ROOM - 20 * any(wrap):
        wrap[max((n, col) for col, n in enumerate(natural) if not wrap[col])[1]] = True
    fmt = ["lx" if w else "l" for w in wrap]
    # groff 1.22's tbl warns when a text block might cross a page end; in man's continuous rendering
    # .ne only lengthens the one page, so asking generously for room costs nothing.
    room = 4 + sum(1 + max(visible(c) for c in r) // 10 for r in rows)
    out = [".PP", f".ne {room}v", ".ad l", ".TS", f"tab({tab});",
           " ".join(f.replace("l", "lb", 1) for f in fmt), " ".join(fmt) + "."]
    for i, row in enumerate(rows):
        if i == 0:
            out.extend([tab.join(inline(c) or r"\&" for c in row), "_"])
            continue
        out.append(tab.join(f"T{{\n{text_line(inline(c, breakable=True))}\nT}}" if w and c else inline(c) or r"\&"
                            for c, w in zip(row, wrap, strict=True)))
    out.extend([".TE", ".ad"])
    return out


def heading(level: int, title: str) -> str:
    # Plain section names are upper case, as in every manual; names of TOML tables stay as written.
    if level == 2 and re.fullmatch(r"[\w ,'-]+", title):
        title = title.upper()
    return f'.{"SH" if level == 2 else "SS"} "{inline(title).replace(chr(34), chr(92) + "(dq")}"'


def convert(source: str, name: str, date: str, version: str) -> str:
    lines = source.splitlines()
    m = TITLE.match(lines[0]) if lines else None
    if not m:
        raise ManualError(f"{name}:1: expected '# name(section) — what it is', got {lines[0] if lines else ''!r}")
    section = m["section"]
    out = ["'\\\" t",
           f'.\\" {m["name"]}({section}), made by packaging/manpage.py from {Path(name).name}: edit that, not this.',
           f'.TH "{m["name"].upper()}" "{section}" "{date}" "etun {version}" "{SECTION_TITLES.get(section, "")}"',
           ".SH NAME", f"{escape(m['name'])} \\- {inline(m['what'])}"]
    intro: list[str] = []            # text before the first section goes at the top of DESCRIPTION
    body = out
    para: list[str] = []
    i = 1

    def flush():
        if para:
            body.extend([".PP", *(text_line(inline(p)) for p in para)])
            para.clear()

    while i < len(lines):
        line, where = lines[i].rstrip(), f"{name}:{i + 1}"
        if not line.strip():
            flush()
            i += 1
        elif line.startswith("```"):
            flush()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ManualError(f"{where}: code block never closed")
            body.extend([".PP", ".RS 4", ".nf"])
            body.extend(text_line(escape(c, code=True)) or r"\&" for c in lines[i + 1:end])
            body.extend([".fi", ".RE"])
            i = end + 1
        elif line.startswith("#"):
            flush()
            level = len(line) - len(line.lstrip("#"))
            if level not in (2, 3) or not line[level:].startswith(" "):
                raise ManualError(f"{where}: only '## ' and '### ' headings after the title, got {line!r}")
            if body is intro:
                body = out
            out.append(heading(level, line[level + 1:].strip()))
            if level == 2 and line[3:].strip().lower() == "description" and intro:
                out.extend(intro)
                intro.clear()
            i += 1
        elif re.match(r"(-|\d+\.) ", line):
            flush()
            bullet = r"\(bu" if line.startswith("-") else line.split(" ", 1)[0]
            item = [line.split(" ", 1)[1]]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                if re.match(r"\s+(-|\d+\.) ", lines[i]):
                    raise ManualError(f"{name}:{i + 1}: nested lists are not supported")
                item.append(lines[i].strip())
                i += 1
            body.extend([f".IP {bullet} 4", *(text_line(inline(p)) for p in item)])
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                row = cells(lines[i].rstrip(), f"{name}:{i + 1}")
                if not all(re.fullmatch(r":?-{3,}:?", c) for c in row):
                    rows.append(row)
                i += 1
            body.extend(table(rows, where))
        elif re.match(r"\s*<[a-zA-Z/]", line) or re.match(r"\s+(-|\d+\.) ", line):
            raise ManualError(f"{where}: HTML and nested lists are not supported, got {line.strip()!r}")
        else:
            if body is out and len(out) == 5:
                body = intro                 # text right after the title
            para.append(line.strip())
            i += 1
    flush()
    if intro:                                 # no DESCRIPTION section: keep the text after NAME's line
        out[5:5] = intro
    return "\n".join(out) + "\n"


def page_date(source: Path) -> str:
    """The date the page was last changed: SOURCE_DATE_EPOCH, else its last commit, else today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        r = subprocess.run(["git", "log", "-1", "--format=%ct", "--", source.name], cwd=source.parent,
                           capture_output=True, text=True)
        epoch = r.stdout.strip() if r.returncode == 0 else ""
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else \
        datetime.datetime.now(datetime.timezone.utc)
    return when.strftime("%Y-%m-%d")


def etun_version() -> str:
    init = Path(__file__).resolve().parents[1] / "etun" / "__init__.py"
    return re.search(r'^__version__ = "(.+)"', init.read_text(), re.M)[1]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: manpage.py SOURCE.md OUTPUT", file=sys.stderr)
        return 2
    source, target = Path(argv[1]), Path(argv[2])
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        print(f"manpage.py: {source}: cannot read: {e.strerror}", file=sys.stderr)
        return 2
    try:
        roff = convert(text, str(source), page_date(source), etun_version())
    except ManualError as e:
        print(f"manpage.py: {e}", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(roff, encoding="ascii")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
