//! Helpers for end-to-end tests: child processes, free ports, data generators.
