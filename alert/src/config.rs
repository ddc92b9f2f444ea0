//! Configuration of `strata alert` and of rule evaluation inside `strata single`.
