//! Statistics shared by functions and aggregations (`quantile`, ...).
