//! Functions of one float: math (`abs`, `ceil`, `exp`, `ln`, `round`, ...),
//! trigonometry, `clamp*`, `sgn`, and the calendar functions of a Unix
//! timestamp in seconds (`day_of_month`, `hour`, ...; UTC).

use super::ElementwiseFunction;

/// The function called `name`, if it maps one float to one float.
pub fn lookup(name: &str) -> Option<ElementwiseFunction> {
    let _ = name;
    None
}
