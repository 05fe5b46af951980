"""gRPC plumbing: interceptors for errors and auth, TLS credentials."""
