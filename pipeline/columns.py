"""Names of CSV columns, special labels and file names: one place, so no stage spells them twice."""

IMAGE = "Image"
ID = "Id"
NEW_WHALE = "new_whale"

# folds.csv
FOLD = "fold"
TRUTH = "truth"  # what a validation photo should be predicted as in its own fold
TRAIN_ONLY = -1  # fold value of photos that are never validated (used in every fold's training)

# cache manifest
SPLIT = "split"
ROW = "row"
WIDTH = "width"
HEIGHT = "height"
GRAY = "gray"
CROP = "crop"  # "x0,y0,x1,y1" in original pixels, or "" when the photo is used whole
ORIGINAL_ID = "original_id"  # the Id before duplicate ids were merged
TRAIN, TEST = "train", "test"

# predictions (long format: one row per query and candidate whale)
SCORE = "score"

SUBMISSION_LABELS = 5
