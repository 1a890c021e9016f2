"""The paper's two studies as data: which configurations each compares, how each is served,
its protocol defaults, and what each configuration is in words (for the report's narrative).

v1 (Pichlmeier et al. 2024, Llama 2, Table I) compares A-D; v2 (the revised "Performance
Characterization of Expert Router for Scalable LLM Inference", Llama 3) compares two
tensor-parallel 70B baselines with eight 70B INT4 experts and eight 8B experts.
"""

from __future__ import annotations

from dataclasses import dataclass

N_EXPERTS = 8
V1_USERS = (1, *range(100, 1001, 100))
V2_USERS = (100, 500, 1000)


@dataclass(frozen=True)
class Config:
    """One configuration of a study: a preset, served directly or behind the router."""

    id: str
    preset: str
    label: str
    routed: bool
    """True: ``N_EXPERTS`` single-GPU experts behind the gateway; False: one tensor-parallel
    engine addressed directly (the baseline)."""
    words: str

    @property
    def experts(self) -> int:
        return N_EXPERTS if self.routed else 1


@dataclass(frozen=True)
class Study:
    """A study: its configurations and the protocol defaults the paper used."""

    name: str
    title: str
    source: str
    configs: tuple[Config, ...]
    users: tuple[int, ...]
    distributions: tuple[str, ...] = ("uniform", "normal")
    repeat: int = 10

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.configs)

    def config(self, config_id: str) -> Config:
        for c in self.configs:
            if c.id == config_id:
                return c
        raise KeyError(config_id)


V1 = Study(
    name="paper",
    title="Expert Router (v1): Llama 2 on one DGX H100",
    source="Pichlmeier, Ross, Luckow, arXiv 2404.15153 (2024), Table I",
    users=V1_USERS,
    configs=(
        Config(
            "A",
            "A",
            "A: 70B FP16 TP8 (direct)",
            False,
            "Llama 2 70B in FP16, tensor parallel over all 8 H100 GPUs, one engine of up to "
            "600 sequences, requests sent to it directly (no gateway)",
        ),
        Config(
            "B",
            "B",
            "B: 8x 70B INT8 (router)",
            True,
            "eight Llama 2 70B experts with 8-bit weight-only quantisation, one per H100, "
            "up to 60 sequences and 72k KV tokens each, behind the routing gateway",
        ),
        Config(
            "C",
            "C",
            "C: 8x 13B FP16 (router)",
            True,
            "eight Llama 2 13B experts in FP16, one per H100, up to 40 sequences and 160k "
            "KV tokens each, behind the routing gateway",
        ),
        Config(
            "D",
            "D",
            "D: 8x 13B FP8 (router)",
            True,
            "eight Llama 2 13B experts with FP8 weights and KV cache, one per H100, up to "
            "150 sequences and 159k KV tokens each, behind the routing gateway",
        ),
    ),
)

V2 = Study(
    name="paper-v2",
    title="Expert Router (v2): Llama 3 on one DGX H100",
    source="the revised paper, 'Performance Characterization of Expert Router for Scalable "
    "LLM Inference' (public summaries); choices it leaves open: docs/reproduction.md",
    users=V2_USERS,
    configs=(
        Config(
            "tp8-bf16",
            "v2-tp8-bf16",
            "70B BF16 TP8 (direct)",
            False,
            "Llama 3 70B unquantised (BF16), tensor parallel over all 8 H100 GPUs, one "
            "engine, requests sent to it directly (no gateway)",
        ),
        Config(
            "tp8-awq",
            "v2-tp8-awq",
            "70B INT4-AWQ TP8 (direct)",
            False,
            "Llama 3 70B quantised to INT4 (AWQ, the experts' weights), tensor parallel over "
            "all 8 H100 GPUs, one engine, requests sent to it directly (no gateway)",
        ),
        Config(
            "experts-70b",
            "v2-70b-awq",
            "8x 70B INT4-AWQ (router)",
            True,
            "eight Llama 3 70B INT4-AWQ experts, one per H100, behind the routing gateway",
        ),
        Config(
            "experts-8b",
            "v2-8b",
            "8x 8B BF16 (router)",
            True,
            "eight Llama 3 8B experts in BF16, one per H100, behind the routing gateway",
        ),
    ),
)

STUDIES = {s.name: s for s in (V1, V2)}
