//! `label_replace` and `label_join` on one label set.
