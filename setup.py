"""The one compiled part: the classifier's per-prompt hot path (``classify/_native.c``).

Optional: where it cannot be built (no C compiler or Python headers) the package installs
without it and the classifier does the same work in Python and numpy. The project's
metadata lives in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "expert_router.classify._native",
            ["src/expert_router/classify/_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
