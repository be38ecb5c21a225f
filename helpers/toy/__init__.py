"""The synthetic shapes world and the embedded model trained on it.

:mod:`.world` (scenes, renders, captions), :mod:`.model` (the embedded model's architecture and
tokenizer), :mod:`.evaluator` (the attribute evaluator), :mod:`.quality` (the quality bar) and
:mod:`.random_pipelines` (tiny random-weight pipelines of every supported family, for tests).

Outside this subpackage only the default-model loader (:mod:`helpers.loading`) and the toy-world
metrics (:mod:`helpers.analysis.metrics`, :mod:`helpers.analysis.alignment`) import it
(tests/test_layout.py checks the rule).
"""
