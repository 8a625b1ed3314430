"""The Cosmos data flywheel as Dagster assets.

Processing code lives in plain modules (``cosmos_assets.curation.probe``, ``.shots``, ``.clips``, ...)
that never import Dagster; the ``assets`` modules are the thin Dagster layer on top.
"""

import os
import warnings

# Dagster warnings a user of this project cannot act on, printed by every command and by every code server
# `dagster dev` starts. Each is matched by its message and the module (or category) that issues it, never a
# blanket ignore: any other warning still shows. This package is imported by the `cosmos` command and by the
# code servers (through cosmos_assets.definitions) before any asset is defined, so the filters are in place
# when the warnings would be issued. Dagster itself is not imported here: processing modules stay Dagster-free.
#
# - Partitioned asset checks (AssetCheckSpec(partitions_def=...): one blocking result per batch, round or
#   checkpoint) are "preview" in this Dagster family, and no supported API gives a check per partition; the
#   PreviewWarning is issued from Dagster's own check decorator (matched by module, as its category would need
#   an import of Dagster).
# - `dagster dev` says it is superseded by `dg dev`, which needs a `dg` project layout this project does not
#   use; `dagster dev` is what the demo and the tests start, and it is supported in this Dagster family.
QUIET_DAGSTER_WARNINGS = (
    {"message": r"Specifying a partitions_def on an AssetCheckSpec is currently in preview", "category": Warning,
     "module": r"dagster\."},
    # Issued through click, so matched by its category (SupersessionWarning is a FutureWarning) and message.
    {"message": r"Function `dev_command` is superseded", "category": FutureWarning},
)
# The same filters for child processes (`dagster dev`, its daemon and code servers), in PYTHONWARNINGS syntax
# (action:message:category): `dagster dev` warns before it imports any project code.
QUIET_DAGSTER_PYTHONWARNINGS = (
    "ignore:Specifying a partitions_def on an AssetCheckSpec is currently in preview:Warning",
    "ignore:Function `dev_command` is superseded:FutureWarning",
)


def quiet_dagster_warnings() -> None:
    for spec in QUIET_DAGSTER_WARNINGS:
        warnings.filterwarnings("ignore", **spec)


def quiet_dagster_warnings_in_children(environ=os.environ) -> None:
    """Add the filters to PYTHONWARNINGS (kept: whatever the user set there comes first and still applies)."""
    present = [entry for entry in environ.get("PYTHONWARNINGS", "").split(",") if entry]
    environ["PYTHONWARNINGS"] = ",".join(present + [e for e in QUIET_DAGSTER_PYTHONWARNINGS if e not in present])


quiet_dagster_warnings()
