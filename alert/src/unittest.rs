//! Rule unit tests in the `promtool test rules` format.
