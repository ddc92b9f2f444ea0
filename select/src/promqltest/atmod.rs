//! `@` variants of an instant eval: every selector and subquery without a
//! fixed `@` time gets `@ <eval time>`, and the query then must give the same
//! answer at other evaluation times. This checks the `@` modifier against
//! every instant case of the files, as the reference runner does.

use std::time::{Duration, SystemTime};

use promql_parser::parser::{self, AtModifier, Expr};

/// Functions whose result depends on the evaluation time even when their
/// arguments are pinned: queries calling them get no variants.
const TIME_DEPENDENT_FUNCTIONS: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
];

/// The pinned query and the times to evaluate it at (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct AtVariants {
    pub query: String,
    pub times: Vec<i64>,
}

/// The variants of `query` evaluated at `at` (ms). `Ok(None)`: the query
/// calls a time-dependent function, or `at` is before the epoch. `Err`: the
/// query does not parse, or prints as something that parses differently.
pub fn at_variants(query: &str, at: i64) -> Result<Option<AtVariants>, String> {
    if at < 0 {
        return Ok(None);
    }
    let mut expr = parser::parse(query)?;
    let pinned = AtModifier::At(SystemTime::UNIX_EPOCH + Duration::from_millis(at as u64));
    let mut time_dependent = false;
    pin(&mut expr, &pinned, &mut time_dependent);
    if time_dependent {
        return Ok(None);
    }
    let printed = expr.to_string();
    // Printing sorts label matchers; the order does not change the meaning.
    let mut want = expr;
    sort_matchers(&mut want);
    match parser::parse(&printed).map(|mut e| {
        sort_matchers(&mut e);
        e
    }) {
        Ok(again) if again == want => {}
        _ => {
            return Err(format!(
                "pinned query {printed:?} does not parse back to the same expression"
            ));
        }
    }
    let times = if at == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * at, 0, at / 5, at, 10 * at]
    };
    Ok(Some(AtVariants {
        query: printed,
        times,
    }))
}

fn unpinned(at: &Option<AtModifier>) -> bool {
    // `@ start()` / `@ end()` equal the eval time of an instant query: they
    // are pinned too, or other eval times would change them.
    !matches!(at, Some(AtModifier::At(_)))
}

fn pin(expr: &mut Expr, at: &AtModifier, time_dependent: &mut bool) {
    match expr {
        Expr::Aggregate(a) => {
            pin(&mut a.expr, at, time_dependent);
            if let Some(p) = &mut a.param {
                pin(p, at, time_dependent);
            }
        }
        Expr::Unary(u) => pin(&mut u.expr, at, time_dependent),
        Expr::Binary(b) => {
            pin(&mut b.lhs, at, time_dependent);
            pin(&mut b.rhs, at, time_dependent);
        }
        Expr::Paren(p) => pin(&mut p.expr, at, time_dependent),
        // A pinned subquery fixes the times of everything inside it.
        Expr::Subquery(s) => {
            if unpinned(&s.at) {
                s.at = Some(at.clone());
            }
        }
        Expr::VectorSelector(v) => {
            if unpinned(&v.at) {
                v.at = Some(at.clone());
            }
        }
        Expr::MatrixSelector(m) => {
            if unpinned(&m.vs.at) {
                m.vs.at = Some(at.clone());
            }
        }
        Expr::Call(c) => {
            *time_dependent |= TIME_DEPENDENT_FUNCTIONS.contains(&c.func.name);
            for arg in &mut c.args.args {
                pin(arg, at, time_dependent);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn sort_selector(vs: &mut promql_parser::parser::VectorSelector) {
    vs.matchers.matchers.sort_by_key(|m| m.to_string());
    for group in &mut vs.matchers.or_matchers {
        group.sort_by_key(|m| m.to_string());
    }
}

fn sort_matchers(expr: &mut Expr) {
    match expr {
        Expr::Aggregate(a) => {
            sort_matchers(&mut a.expr);
            if let Some(p) = &mut a.param {
                sort_matchers(p);
            }
        }
        Expr::Unary(u) => sort_matchers(&mut u.expr),
        Expr::Binary(b) => {
            sort_matchers(&mut b.lhs);
            sort_matchers(&mut b.rhs);
        }
        Expr::Paren(p) => sort_matchers(&mut p.expr),
        Expr::Subquery(s) => sort_matchers(&mut s.expr),
        Expr::VectorSelector(v) => sort_selector(v),
        Expr::MatrixSelector(m) => sort_selector(&mut m.vs),
        Expr::Call(c) => {
            for arg in &mut c.args.args {
                sort_matchers(arg);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}
