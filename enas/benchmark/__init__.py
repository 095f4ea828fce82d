"""Benchmark tables (NAS-Bench-201) and table-mode search: architectures scored by lookup, no training.

NAS-Bench-201 (Dong & Yang, ICLR 2020) trained every one of the 15,625 cells of its space, so a
search method can be run against the true accuracies in seconds. ``table`` reads such a table
from CSV, ``synthetic`` writes a structured stand-in, ``nats_import`` converts the official
NATS-Bench files, ``table_search`` runs a policy against a table under a query or
simulated-time budget.
"""
