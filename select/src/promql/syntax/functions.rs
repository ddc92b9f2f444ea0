//! What each PromQL function takes and returns, for type-checking a query
//! that the parser refused. The parser knows the same table but does not
//! share it; the test below holds the two equal, entry by entry.

use promql_parser::parser::value::ValueType;

/// A function's arguments and result. `variadic` counts as in Prometheus:
/// 0 takes exactly `args`; n > 0 lets the last argument be left out or
/// repeated up to n times; below 0 repeats it without bound.
#[derive(Debug)]
pub(super) struct Signature {
    pub name: &'static str,
    pub args: &'static [ValueType],
    pub variadic: i32,
    pub returns: ValueType,
}

const V: ValueType = ValueType::Vector;
const M: ValueType = ValueType::Matrix;
const S: ValueType = ValueType::Scalar;
const T: ValueType = ValueType::String;

const fn f(
    name: &'static str,
    args: &'static [ValueType],
    variadic: i32,
    returns: ValueType,
) -> Signature {
    Signature {
        name,
        args,
        variadic,
        returns,
    }
}

/// Sorted by name. `holt_winters` is the older name Strata registers with
/// the parser (see `super::parse`).
const FUNCTIONS: &[Signature] = &[
    f("abs", &[V], 0, V),
    f("absent", &[V], 0, V),
    f("absent_over_time", &[M], 0, V),
    f("acos", &[V], 0, V),
    f("acosh", &[V], 0, V),
    f("asin", &[V], 0, V),
    f("asinh", &[V], 0, V),
    f("atan", &[V], 0, V),
    f("atanh", &[V], 0, V),
    f("avg_over_time", &[M], 0, V),
    f("ceil", &[V], 0, V),
    f("changes", &[M], 0, V),
    f("clamp", &[V, S, S], 0, V),
    f("clamp_max", &[V, S], 0, V),
    f("clamp_min", &[V, S], 0, V),
    f("cos", &[V], 0, V),
    f("cosh", &[V], 0, V),
    f("count_over_time", &[M], 0, V),
    f("day_of_month", &[V], 1, V),
    f("day_of_week", &[V], 1, V),
    f("day_of_year", &[V], 1, V),
    f("days_in_month", &[V], 1, V),
    f("deg", &[V], 0, V),
    f("delta", &[M], 0, V),
    f("deriv", &[M], 0, V),
    f("double_exponential_smoothing", &[M, S, S], 0, V),
    f("end", &[], 0, S),
    f("exp", &[V], 0, V),
    f("first_over_time", &[M], 0, V),
    f("floor", &[V], 0, V),
    f("histogram_avg", &[V], 0, V),
    f("histogram_count", &[V], 0, V),
    f("histogram_fraction", &[S, S, V], 0, V),
    f("histogram_quantile", &[S, V], 0, V),
    f("histogram_quantiles", &[V, T, S, S], 9, V),
    f("histogram_stddev", &[V], 0, V),
    f("histogram_stdvar", &[V], 0, V),
    f("histogram_sum", &[V], 0, V),
    f("holt_winters", &[M, S, S], 0, V),
    f("hour", &[V], 1, V),
    f("idelta", &[M], 0, V),
    f("increase", &[M], 0, V),
    f("info", &[V, V], 1, V),
    f("integral", &[M, S], 1, V),
    f("irate", &[M], 0, V),
    f("label_join", &[V, T, T, T], -1, V),
    f("label_replace", &[V, T, T, T, T], 0, V),
    f("last_over_time", &[M], 0, V),
    f("ln", &[V], 0, V),
    f("log10", &[V], 0, V),
    f("log2", &[V], 0, V),
    f("mad_over_time", &[M], 0, V),
    f("max_of", &[S, S], 0, S),
    f("max_over_time", &[M], 0, V),
    f("min_of", &[S, S], 0, S),
    f("min_over_time", &[M], 0, V),
    f("minute", &[V], 1, V),
    f("month", &[V], 1, V),
    f("pi", &[], 0, S),
    f("predict_linear", &[M, S], 0, V),
    f("present_over_time", &[M], 0, V),
    f("quantile_over_time", &[S, M], 0, V),
    f("rad", &[V], 0, V),
    f("range", &[], 0, S),
    f("rate", &[M], 0, V),
    f("resets", &[M], 0, V),
    f("round", &[V, S], 1, V),
    f("scalar", &[V], 0, S),
    f("sgn", &[V], 0, V),
    f("sin", &[V], 0, V),
    f("sinh", &[V], 0, V),
    f("sort", &[V], 0, V),
    f("sort_by_label", &[V, T], -1, V),
    f("sort_by_label_desc", &[V, T], -1, V),
    f("sort_desc", &[V], 0, V),
    f("sqrt", &[V], 0, V),
    f("start", &[], 0, S),
    f("start_timestamp", &[V], 0, V),
    f("stddev_over_time", &[M], 0, V),
    f("stdvar_over_time", &[M], 0, V),
    f("step", &[], 0, S),
    f("sum_over_time", &[M], 0, V),
    f("tan", &[V], 0, V),
    f("tanh", &[V], 0, V),
    f("time", &[], 0, S),
    f("timestamp", &[V], 0, V),
    f("ts_of_first_over_time", &[M], 0, V),
    f("ts_of_last_over_time", &[M], 0, V),
    f("ts_of_max_over_time", &[M], 0, V),
    f("ts_of_min_over_time", &[M], 0, V),
    f("vector", &[S], 0, V),
    f("year", &[V], 1, V),
];

pub(super) fn lookup(name: &str) -> Option<&'static Signature> {
    FUNCTIONS
        .binary_search_by(|s| s.name.cmp(name))
        .ok()
        .map(|i| &FUNCTIONS[i])
}

#[cfg(test)]
mod tests {
    use promql_parser::parser::Expr;

    use super::*;

    #[test]
    fn table_is_sorted() {
        for pair in FUNCTIONS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    /// Each entry, called with arguments of its types, parses to a call the
    /// parser types exactly as the entry says.
    #[test]
    fn every_entry_matches_the_parser() {
        super::super::register_extra_functions();
        for sig in FUNCTIONS {
            // `start` and `end` lex as keywords, so no query can call them.
            if matches!(sig.name, "start" | "end") {
                continue;
            }
            let args: Vec<&str> = sig
                .args
                .iter()
                .map(|t| match t {
                    ValueType::Vector => "up",
                    ValueType::Matrix => "up[1m]",
                    ValueType::Scalar => "1",
                    ValueType::String => "\"a\"",
                })
                .collect();
            let query = format!("{}({})", sig.name, args.join(", "));
            let parsed = promql_parser::parser::parse(&query);
            let Ok(Expr::Call(call)) = parsed else {
                panic!("{query} does not parse to a call: {parsed:?}");
            };
            assert_eq!(call.func.arg_types, sig.args, "{query}: argument types");
            assert_eq!(call.func.variadic, sig.variadic, "{query}: variadic");
            assert_eq!(call.func.return_type, sig.returns, "{query}: result type");
        }
    }
}
