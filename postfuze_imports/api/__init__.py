"""The HTTP API: routes, schemas, authentication, errors and pagination."""
