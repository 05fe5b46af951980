"""gRPC plumbing: interceptors for errors, metrics and auth."""
