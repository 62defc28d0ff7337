"""The manual covers what the code offers: every command, option, site.toml key, reload case, verify-peer check, drop reason."""

import re

import pytest

from etun import _fast, cli, config, probe, reload
from tests import REPO

MANUAL = (REPO / "docs" / "MANUAL.md").read_text()
CONFIG = (REPO / "docs" / "CONFIG.md").read_text()
STATUS = (REPO / "docs" / "STATUS.md").read_text()


def section(page: str, heading: str) -> str:
    """The text of a page from the heading line `heading` to the next heading of the same level or higher."""
    level = heading.split(" ", 1)[0]
    start = page.index(f"\n{heading}\n")
    ends = [m.start() for m in re.finditer(r"\n#{1,%d} " % len(level), page[start + 1:])]
    return page[start: start + 1 + ends[0]] if ends else page[start:]


def usage_lines() -> list[str]:
    usage = cli.__doc__.split("Usage:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in usage.splitlines()]


def test_the_synopsis_is_the_usage_of_the_cli():
    synopsis = section(MANUAL, "## Synopsis").split("```")[1].strip().splitlines()
    assert synopsis == [line.replace("(-h | --help)", "-h | --help") for line in usage_lines()]


@pytest.mark.parametrize("command", sorted({line.split()[1] for line in usage_lines() if line.split()[1][0] not in "-("}))
def test_every_command_has_its_section(command):
    assert re.search(rf"^### etun {command}\b|^### .*\betun {command}\b", MANUAL, re.M), f"no section for etun {command}"


@pytest.mark.parametrize("option", sorted(set(re.findall(r"(--[a-z]+)", cli.__doc__.split("Options:", 1)[1]))))
def test_every_option_is_in_the_options_table(option):
    assert re.search(rf"^\| (`-[a-z]`, )?`{option}\b", section(MANUAL, "## Options"), re.M), f"{option} missing from ## Options"


TABLE_HEADINGS = {"segment": "## [[segment]]", "filter": "## [filter.nic_ingress] and [filter.tunnel_ingress]"}


@pytest.mark.parametrize("table,key", [(t, k) for t, keys in config.TABLE_KEYS.items() for k in keys if t != "filter"])
def test_every_site_toml_key_is_described_in_its_table(table, key):
    text = section(CONFIG, TABLE_HEADINGS.get(table, f"## [{table}]"))
    assert re.search(rf"^\| `{key}` \|", text, re.M) or f"[{table}.{key}." in text, f"[{table}] {key} undocumented"


@pytest.mark.parametrize("key", config.FILTER_TABLE_KEYS + config.RULE_KEYS)
def test_every_filter_key_is_described(key):
    assert f"`{key}`" in section(CONFIG, TABLE_HEADINGS["filter"]), f"filter key {key} undocumented"


@pytest.mark.parametrize("table", config.TABLES)
def test_every_table_is_in_the_list_of_tables(table):
    names = {"segment": "[[segment]]", "filter": "[filter.nic_ingress]"}
    assert f"| `{names.get(table, f'[{table}]')}` |" in section(CONFIG, "## Description")


@pytest.mark.parametrize("path", [path for path, _ in reload.FIELDS])
def test_the_reload_table_says_what_a_change_to_each_field_does(path):
    table, key = path.split(".")
    rows = [line for line in section(MANUAL, "## Reload").splitlines() if line.startswith("| ")]
    if table == "segment":
        named = "[[segment]]" if key == "layout" else "[segment.filter.*]"
        assert any(named in row for row in rows), path
    elif table == "filter":
        assert any("[filter.*]" in row for row in rows), path
    else:
        named = (f"`[{table}]`", f"`[{table}] {key}`", f"`{key}`")     # the whole table, the key, or the key alone
        assert any(name in row for row in rows for name in named), path


def test_the_verify_peer_table_lists_every_check_in_the_order_of_the_report():
    rows = re.findall(r"^\| `([a-z]+)` \|", section(MANUAL, "### etun verify-peer"), re.M)
    assert rows == [*probe.CHECKS, "segments"]


@pytest.mark.parametrize("reason", _fast.DROP_REASONS)
def test_every_drop_reason_etun_status_shows_is_explained(reason):
    assert f"`{reason}`" in STATUS, f"drop reason {reason} missing from docs/STATUS.md"
