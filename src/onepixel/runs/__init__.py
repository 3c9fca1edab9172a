"""The RUN folder: its schema, the one reader, the one writer and the one summary.

- :mod:`~onepixel.runs.schema`: file names, columns, the attack row, the success rule, defaults;
- :mod:`~onepixel.runs.store`: the campaign's append-only, resumable writer;
- :mod:`~onepixel.runs.config`: ``RunConfig``, config.json typed once (defaults, migrations);
- :mod:`~onepixel.runs.reader`: ``load_run`` / ``read_attacks_csv`` into column arrays;
- :mod:`~onepixel.runs.summary`: the papers' Tables 1-2 and headline counts (``summary.json``).
"""

from onepixel.runs.config import AttackRecord, ModelRecord, RunConfig
from onepixel.runs.reader import (
    AttackTable,
    RunData,
    load_history,
    load_run,
    load_run_config,
    read_attacks_csv,
)
from onepixel.runs.schema import ATTACK_COLUMNS, HISTORY_COLUMNS, AttackResult, judge
from onepixel.runs.store import RunStore
from onepixel.runs.summary import format_summary, summarize, summarize_run

__all__ = ["ATTACK_COLUMNS", "HISTORY_COLUMNS", "AttackRecord", "AttackResult", "AttackTable",
           "ModelRecord", "RunConfig", "RunData", "RunStore", "format_summary", "judge",
           "load_history", "load_run", "load_run_config", "read_attacks_csv", "summarize",
           "summarize_run"]
