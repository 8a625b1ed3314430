"""The Cosmos data flywheel as Dagster assets.

Processing code lives in plain modules (``cosmos_assets.curation.probe``, ``.shots``, ``.clips``, ...)
that never import Dagster; the ``assets`` modules are the thin Dagster layer on top.
"""
