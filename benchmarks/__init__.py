"""tracewire's benchmarks: overhead per request against a bare app, the SDK floor and contrib.

Not shipped with the package; run from the repository root (see docs/performance.md).
"""
