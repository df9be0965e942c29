"""faiss search, one score per known whale, and the new_whale threshold."""
