"""The Milvus layer behind `core.vector_store.MilvusVectorStore`, one module per concern:
layout and inspection at the bottom, then reads, writes, search, lifecycle and indexing, with
the companion collections, client retries and error mapping beside them."""
