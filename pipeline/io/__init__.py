"""Reading the Kaggle layout and writing outputs atomically."""
