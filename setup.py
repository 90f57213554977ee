"""The one compiled part: ``stream_infer._forest``, the bit-exact tree scorer.

``optional=True``: where no C compiler is available the install still succeeds and the
service scores with XGBoost itself (``model.backend = "auto"``); ``stream-infer config show``
and the start-up log say which backend serves.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "stream_infer._forest",
    sources=["stream_infer/_forest.c"],
    extra_compile_args=["-O3", "-fno-fast-math", "-ffp-contract=off"],
    optional=True,
)])
