"""Local-feature matching, the training-free evidence of wildlife re-identification (HotSpotter-style
SIFT matching, as wildlife-tools ships it), split as wildlife-tools splits it:

    extract.py    SIFT descriptors and keypoints of a photo, or of every cached photo (DescriptorStore)
    match.py      a pair's ratio-test matches, and the settings that score a pair (MatchSettings)
    collect.py    one score per pair: the match count, or the inliers of one RANSAC transform
    calibrate.py  each candidate's count into its new score (a blend, or calibrated probabilities)
    saved.py      counts between cached photos kept for the next run

The re-scorer that uses them on a search's shortlist is retrieval/postprocess/local.py."""
