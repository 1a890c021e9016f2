"""A gateway that cannot start (a cluster without a pool) fails cleanly, leaking nothing."""

from __future__ import annotations

import gc

import pytest

from expert_router.config import gateway_config_from_experts
from expert_router.errors import ConfigError
from expert_router.gateway import serve_gateway


async def test_missing_pool_is_a_config_error_and_leaks_no_session() -> None:
    config = gateway_config_from_experts({"0": ["http://127.0.0.1:9"]})  # clusters 1..7 missing
    with pytest.raises(ConfigError, match="no pool"):
        async with serve_gateway(config, probes=False):
            pass
    gc.collect()  # an unclosed aiohttp session warns here; warnings are errors in this suite
