"""The fleet planner: how many replicas of which expert per cluster, for a topic mix.

``plan.make_plan`` searches the allocation (``search``: marginal gain plus local search),
pricing each candidate in virtual time (``pricing``: one simulation per pool, in parallel;
``predict``: the fleet's metrics composed from its pools) against targets (``slo``); the mix
may be measured at a gateway (``measured``); ``outputs`` writes the gateway config and
Kubernetes objects (``deploy``), ``plan.json`` (``document``) and the report. docs/planning.md.
"""
