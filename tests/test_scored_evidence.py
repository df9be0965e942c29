"""The review page draws the evidence that was scored (issue #33, item 5): the matches it draws for a pair
(local/collect.scored_matches) are the very matches the pair's local score counted, with the settings
that scored it (local/match.MatchSettings from knn.local_*), and the page names those settings."""
import numpy as np
import pytest

from pipeline.config import DEFAULTS
from pipeline.retrieval.local.collect import local_scores, scored_matches
from pipeline.retrieval.local.extract import sift_descriptors
from pipeline.retrieval.local.match import MatchSettings
from tests.test_geometry import textured, warp


@pytest.mark.parametrize("overrides", [{}, {"local_geometry": "none"},
                                       {"local_geometry": "fundamental", "local_rootsift": True}])
def test_drawn_matches_are_the_counted_ones(overrides):
    settings = MatchSettings.from_knn({**DEFAULTS["knn"], **overrides})
    photo = textured(1)
    query = sift_descriptors(warp(photo), settings.keypoints)
    for gallery in (sift_descriptors(photo, settings.keypoints), sift_descriptors(textured(2), settings.keypoints)):
        q_xy, g_xy, strength = scored_matches(query, gallery, settings)
        assert len(q_xy) == len(g_xy) == len(strength) == local_scores(query, [gallery], settings)[0]
        assert ((strength >= 0) & (strength <= 1)).all()


def test_the_settings_name_what_scored():
    settings = MatchSettings.from_knn(DEFAULTS["knn"])
    text = settings.describe()
    assert f"ratio {DEFAULTS['knn']['local_ratio']:g}" in text and DEFAULTS["knn"]["local_geometry"] in text
    assert f"at least {DEFAULTS['knn']['local_min_matches']} matches" in text
