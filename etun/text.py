"""Text from the network made safe to print: no control characters, no terminal escapes."""

SHOWN_MAX_CHARS = 64


def printable(text: str) -> str:
    """`text` with every control or unprintable character (escape sequences among them)
    replaced by "?", and cut to SHOWN_MAX_CHARS."""
    return "".join(c if c.isprintable() else "?" for c in text[:SHOWN_MAX_CHARS])
