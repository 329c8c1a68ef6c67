"""Printing helpers shared by the commands: two-column result tables (rich)."""

from __future__ import annotations


def print_table(title: str, rows: list[tuple[str, str]], *, note: str | None = None) -> None:
    """A two-column table on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    console = Console()
    console.print(table)
    if note:
        console.print(note)


def machine_rows(machine: dict) -> list[tuple[str, str]]:
    v = machine["versions"]
    return [
        ("machine", f"{machine['cpu_model']}, {machine['usable_cores']} cores, load {machine['load_average_1_5_15']}"),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)),
    ]
