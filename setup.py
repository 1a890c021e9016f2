"""The compiled parts: the classifier's per-prompt hot path (``classify/_native.c``) and the
httptools callbacks that run per header and per relayed chunk (``wire/_http1.c``).

Both optional: where they cannot be built (no C compiler or Python headers) the package
installs without them and their Python twins do the same work (the classifier with numpy).
The project's metadata lives in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "expert_router.classify._native",
            ["src/expert_router/classify/_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "expert_router.wire._http1",
            ["src/expert_router/wire/_http1.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
