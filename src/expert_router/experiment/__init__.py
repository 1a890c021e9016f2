"""Orchestration of whole studies: the one-command demo and the paper's experiment.

``stack`` runs emulated fleets and gateways in a background event loop; ``paper`` holds the
paper's protocol and runs it live or in virtual time; ``demo`` is ``expert-router demo``.
"""
