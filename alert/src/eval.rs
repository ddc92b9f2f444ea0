//! Rule group evaluation: scheduling, queries and recording results.
