"""What every command module uses: the one way a command ends on bad input, and `--set key=value` parsing."""

import typer


def fail(err: BaseException | str):
    """The one way a command ends on bad input: `error: <message>` on stderr, exit status 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def parse_overrides(items: list[str]) -> dict:
    """`--set lr=3e-4 --set data.history_turns=1` as {key: value}, each value read as YAML (so 3e-4 is a number)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: write overrides as key=value, e.g. lr=3e-4 or data.history_turns=1")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def check_at_least(*checks: tuple[str, int | None, int]) -> None:
    """Refuse a whole-number flag below its least value, e.g. ("--limit", limit, 1); None means not given."""
    for name, value, least in checks:
        if value is not None and value < least:
            fail(f"{name} is {value}; it must be a whole number in [{least}, inf)")
