"""Attribute-level alignment metrics (helpers.analysis.metrics)."""

import numpy as np

from helpers.analysis.metrics import attribute_alignment, attribute_hits


def test_attribute_hits_per_image_and_name():
    truths = [{"shape": "circle", "color": "red"}, {"shape": "star"}]
    predictions = [{"shape": "circle", "color": "blue", "size": "small"}, {"shape": "heart", "color": "red", "size": "large"}]
    hits = attribute_hits(predictions, truths)
    assert list(hits) == ["shape", "color"]  # only what some truth names
    np.testing.assert_array_equal(hits["shape"], [1.0, 0.0])
    assert hits["color"][0] == 0.0 and np.isnan(hits["color"][1])  # the second prompt names no colour
    # averaging the named attributes per image gives attribute_alignment
    stacked = np.vstack(list(hits.values()))
    np.testing.assert_allclose(np.nanmean(stacked, axis=0), attribute_alignment(predictions, truths))
