"""Private PostgreSQL, Redis and Bluesky PDS servers for development, tests and the demo."""
