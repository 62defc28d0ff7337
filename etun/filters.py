"""Compile [filter.*] rules into what the datapath's filter tables take, and name them for people."""

from etun import _fast

DIRECTIONS = {"nic_ingress": _fast.FILTER_NIC_INGRESS, "tunnel_ingress": _fast.FILTER_TUNNEL_INGRESS}


def kind_and_value(rule) -> tuple[str, object]:
    if rule.mac is not None:
        return "mac", rule.mac
    if rule.oui is not None:
        return "oui", rule.oui
    return "ethertype", rule.ethertype


def describe(rule) -> str:
    """A rule as an operator writes it: "deny mac 01:80:c2:00:00:00"."""
    kind, value = kind_and_value(rule)
    shown = f"0x{value:04x}" if kind == "ethertype" else value.hex(":")
    return f"{rule.action} {kind} {shown}"


def install(datapath, filters, guard: tuple[str, ...] = ()) -> None:
    """Put both directions' rules (an etun.config.Filters) into the datapath, with the [bridge]
    guard presets in front of nic_ingress's."""
    for name, direction in DIRECTIONS.items():
        table = getattr(filters, name)
        rules = [(r.action == "allow", *kind_and_value(r)) for r in table.rules]
        datapath.set_filter(direction, table.default == "allow", rules,
                            guard if direction == _fast.FILTER_NIC_INGRESS else ())
