"""The manual pages (packaging/manpage.py) render without a warning; bad input is refused.

The manual pages (packaging/manpage.py): etun(8) and etun.toml(5) from docs/, and a sample of every
construct, render with `man --warnings` without a single warning; what the converter refuses, it
refuses with the file and line."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

sys.path.insert(0, str(REPO / "packaging"))
import manpage  # noqa: E402

SAMPLE = REPO / "tests" / "packaging" / "manual" / "sample.md"
PAGES = [(REPO / "docs" / "MANUAL.md", "etun.8"), (REPO / "docs" / "CONFIG.md", "etun.toml.5"),
         (SAMPLE, "sample.8")]


def man(page: Path, lang: str) -> subprocess.CompletedProcess:
    """What a reader sees in an 80-column terminal, and everything groff and tbl complain about."""
    if shutil.which("man") is None:
        pytest.skip("man is not installed (make test installs man-db)")
    env = dict(os.environ, LANG=lang, LC_ALL=lang, MANWIDTH="80")
    return subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("man")
    pages = {}
    for source, name in PAGES:
        r = subprocess.run([sys.executable, str(REPO / "packaging" / "manpage.py"), str(source), str(out / name)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        pages[name] = out / name
    return pages


@pytest.mark.parametrize("name", [name for _, name in PAGES])
@pytest.mark.parametrize("lang", ["C.UTF-8", "C"])
def test_each_page_renders_without_a_warning(built, name, lang):
    r = man(built[name], lang)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "NAME" in r.stdout and len(r.stdout.splitlines()) > 20


@pytest.mark.parametrize("name,whatis", [("etun.8", "etun - "), ("etun.toml.5", "etun.toml - ")])
def test_whatis_finds_the_name_line(built, name, whatis):
    r = subprocess.run(["lexgrog", str(built[name])], capture_output=True, text=True)
    assert r.returncode == 0 and f'"{whatis}' in r.stdout, r.stdout + r.stderr


def test_the_manual_pages_carry_every_section_of_their_source(built):
    text = man(built["etun.8"], "C.UTF-8").stdout
    for section in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert f"\n{section}\n" in text, section
    assert "etun.toml(5)" in text and "/usr/share/doc/etun/STATUS.md" in text
    config = man(built["etun.toml.5"], "C.UTF-8").stdout
    for table in ("[site]", "[lan]", "[tunnel]", "[security]", "[control]", "[metrics]"):
        assert f"\n   {table}" in config or f"\n{table}" in config, table


def test_the_sample_keeps_dots_backslashes_minus_signs_and_links(built):
    roff = built["sample.8"].read_text()
    assert "\n\\&.a line that starts with a dot, and a \\ebackslash\n" in roff
    assert "\n\\&.A line of text" in roff and "\n\\&'one" not in roff        # a quote mid-line is harmless
    assert r"\fB\-\-version\fR" not in roff and r"\fBinline \-\-code\fR" in roff
    assert r"\fBetun.toml\fR(5)" in roff and r"\fI/usr/share/doc/etun/STATUS.md\fR" in roff
    assert "outside \\fIhttps://example.org/x\\fR" in roff and "source tree" in roff
    assert r"\(em" in roff and r"\(->" in roff and r"\(mc" in roff and r"\[u00E9]" in roff
    roff.encode("ascii")
    text = man(built["sample.8"], "C.UTF-8").stdout
    assert "DESCRIPTION\n       This text comes before the first section" in text
    assert "a | b" in text and "--timeout=<seconds>" in text


@pytest.mark.parametrize("source,error", [
    ("# sample — no section\n", "x.md:1: expected '# name(section) — what it is'"),
    ("# s(8) — t\n\n#### deep\n", "x.md:3: only '## ' and '### ' headings"),
    ("# s(8) — t\n\n- item\n  - nested\n", "x.md:4: nested lists are not supported"),
    ("# s(8) — t\n\n```\ncode\n", "x.md:3: code block never closed"),
    ("# s(8) — t\n\n<b>html</b>\n", "x.md:3: HTML and nested lists are not supported"),
    ("# s(8) — t\n\n| a | b |\n|---|---|\n| 1 |\n", "x.md:3: every row of a table needs 2 cells"),
])
def test_what_the_converter_cannot_render_is_refused_with_its_line(source, error):
    with pytest.raises(manpage.ManualError) as e:
        manpage.convert(source, "x.md", "2026-01-01", "0.1.0")
    assert str(e.value).startswith(error), str(e.value)


def test_a_refusal_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("no title\n")
    r = subprocess.run([sys.executable, str(REPO / "packaging" / "manpage.py"), str(bad), str(tmp_path / "x.8")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(f"manpage.py: {bad}:1: ")


def test_make_man_built_the_pages_from_the_docs_as_they_are_now(built):
    for name in ("etun.8", "etun.toml.5"):
        page = REPO / "build" / "man" / name
        if not page.exists():
            pytest.skip(f"build/man/{name} is not built (run make man)")
        assert page.read_text() == built[name].read_text(), f"build/man/{name} is older than docs/ (run make man)"
