"""A small local web page: upload a photo, see its five most likely whales."""
