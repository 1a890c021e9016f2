"""Expert Router: classify each prompt and stream it to the expert LLM server of its cluster.

Subpackages: ``classify`` (c-BTM clustering), ``gateway`` (the routing proxy), ``backends``
(upstream protocols), ``emulator`` (a GPU-fleet stand-in), ``bench`` (the user simulator).
"""

__version__ = "0.1.0"
