"""What the ``dt_*`` commands share, so each command stays thin (parse, call, print).

- ``arguments``: argparse ``type=`` validators and the options several commands take;
- ``output``: terminal-safe text, JSON, streaming tables, progress, and the API's
  errors as command errors.
"""

from distributed_tasks.cli.arguments import (
    STATE_ALIASES,
    add_json_flag,
    add_name_arguments,
    add_task_list,
    beat_name,
    json_list,
    json_object,
    name_type,
    node_name,
    port,
    positive_float,
    positive_int,
    registered_task,
    run_name,
    run_states,
    task_list_name,
)
from distributed_tasks.cli.output import (
    Progress,
    Table,
    api_errors,
    dumps,
    emit,
    iso_when,
    printable,
    seconds,
    when,
    write_json_array,
)

__all__ = [
    "STATE_ALIASES",
    "Progress",
    "Table",
    "add_json_flag",
    "add_name_arguments",
    "add_task_list",
    "api_errors",
    "beat_name",
    "dumps",
    "emit",
    "iso_when",
    "json_list",
    "json_object",
    "name_type",
    "node_name",
    "port",
    "positive_float",
    "positive_int",
    "printable",
    "registered_task",
    "run_name",
    "run_states",
    "seconds",
    "task_list_name",
    "when",
    "write_json_array",
]
