"""Retrieval: the vector store (embedded Qdrant engine or server), collection schemas,
search, augmentation, re-ranking and evaluation."""
