"""Fuzzing: shared input decoding, invariant checks and atheris targets.

``tests/fuzz/targets.py`` holds one check function per target (bytes in, ``AssertionError`` out
when an invariant breaks); ``tests/fuzz/run.py`` drives them with atheris, and the pytest
modules ``tests/test_fuzz_*.py`` run the same checks on generated input, the seed corpus and
every recorded regression. See ``docs/fuzzing.md``.
"""
