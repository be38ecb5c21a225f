"""Benchmarks: the acceleration benchmark (:mod:`.acceleration`, :mod:`.summaries`) and scale-out over
processes with ``accelerate`` (:mod:`.sharding`)."""
