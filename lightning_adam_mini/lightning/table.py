"""The partition summary shown at fit start: a rich table when rich is installed, else text."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning_utilities.core.imports import RequirementCache

from partitioners import PartitionPlan
from partitioners.plan import COLUMNS

from ..stats import role_counts

_RICH_AVAILABLE = RequirementCache("rich>=10.2.2")


def role_rows(plan: PartitionPlan) -> list[tuple[str, str, str, str]]:
    """(role, #params, share of params, #blocks) per role, largest share first."""
    counts = role_counts(plan)
    total = plan.num_params or 1
    order = sorted(counts, key=lambda r: -counts[r][0])
    return [(r, f"{counts[r][0]:,}", f"{counts[r][0] / total:.1%}", f"{counts[r][1]:,}") for r in order]


def plain_summary(plan: PartitionPlan) -> str:
    header = ("role", "#params", "share", "#blocks")
    rows = role_rows(plan)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    per_role = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return f"Adam-mini partition\n{plan}\n\n" + "\n".join(per_role)


@rank_zero_only
def show_plan(plan: PartitionPlan, use_rich: bool = True) -> None:
    """Print the partition (rank zero only)."""
    if not (use_rich and _RICH_AVAILABLE):
        rank_zero_info(plain_summary(plan))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Adam-mini partition", caption=plan.summary())
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="right" if col == "#blocks" else "left", no_wrap=i == 0)
    for row in plan.rows():
        table.add_row(*row)
    roles = Table(title="per role")
    for col in ("role", "#params", "share", "#blocks"):
        roles.add_column(col, justify="left" if col == "role" else "right")
    for row in role_rows(plan):
        roles.add_row(*row)
    console = Console()
    if not console.is_terminal:  # logs and pipes: don't squeeze the table into 80 columns
        rows = [COLUMNS, *plan.rows()]
        needed = sum(max(len(r[i]) for r in rows) + 3 for i in range(len(COLUMNS))) + 1
        console.width = max(console.width, needed)
    console.print(table)
    console.print(roles)
