"""The gRPC API (lookalike.v1): servicers, interceptors, server and typed client."""
