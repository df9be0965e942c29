"""A learned fluke detector: a box regressor on a timm backbone, trained on the photos a user boxed
(`whale boxes train`), predicting a box for every other photo; preprocess crops with it
(`preprocess.boxes_model`)."""
