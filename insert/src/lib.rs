//! Ingestion: protocol parsers, validation, and writing rows to storage.
