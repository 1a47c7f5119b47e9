"""The admin port: metrics, health and readiness, and the admin API (docs/operations.md)."""
