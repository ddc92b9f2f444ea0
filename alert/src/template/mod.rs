//! Alert templates: the subset of Go's text/template that Prometheus rule labels
//! and annotations use, with Prometheus' template functions.
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trim markers and
//! `{{/* comments */}}`; pipelines with `|`; variables (`$x := ...`, `$x = ...`,
//! `range $k, $v := ...`); `.Field` access on the data (`.Labels`, `.Value`,
//! `.ExternalLabels`, `.ExternalURL`) and on maps and query samples; `if`/`else
//! if`/`else`, `with`/`else with`, `range`/`else`, `break`, `continue`; Go's
//! builtins `and or not len index print printf println html js urlquery eq ne lt
//! le gt ge slice`; Prometheus' `query first label value strvalue sortByLabel
//! args reReplaceAll match title toUpper toLower safeHtml stripPort stripDomain
//! humanize humanize1024 humanizeDuration humanizePercentage humanizeTimestamp
//! toTime pathPrefix externalURL graphLink tableLink`; `{{define "name"}}`
//! (top level only), `{{template "name" pipeline}}` and `{{block "name"
//! pipeline}}`: a defined template sees only `$` (its dot), not the
//! predefined variables, and calls nest at most 100 deep. Not supported:
//! `call`, method calls.
//!
//! Each template sees `$labels`, `$externalLabels`, `$externalURL` and `$value`,
//! as Prometheus defines them before the template text.

mod exec;
mod funcs;
mod parse;

use std::collections::BTreeMap;

use funcs::Value;

/// One labelled value returned by a template `query`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Runs an instant PromQL query for the `query` template function.
pub trait QueryFn {
    fn query(&self, query: &str) -> Result<Vec<Sample>, String>;
}

/// What an alert template sees: `$labels`, `$value`, `$externalLabels`, `$externalURL`.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: line {line}: {message}")]
    Parse {
        name: String,
        line: usize,
        message: String,
    },
    #[error("template {name}: cannot expand: {message}")]
    Exec { name: String, message: String },
}

const PREDEFINED: [&str; 5] = ["$", "$labels", "$externalLabels", "$externalURL", "$value"];

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<parse::Node>,
    defines: std::sync::Arc<parse::Defines>,
}

impl Template {
    /// Parses `text`; `name` appears in errors.
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let (nodes, defines) =
            parse::parse(text, &PREDEFINED).map_err(|(line, message)| TemplateError::Parse {
                name: name.to_string(),
                line,
                message,
            })?;
        Ok(Template {
            name: name.to_string(),
            nodes,
            defines: std::sync::Arc::new(defines),
        })
    }

    /// Expands the template for one alert; `query` serves the `query` function
    /// (without it, `query` fails).
    pub fn expand(
        &self,
        data: &Data,
        query: Option<&dyn QueryFn>,
    ) -> Result<String, TemplateError> {
        let labels = Value::string_map(&data.labels);
        let external_labels = Value::string_map(&data.external_labels);
        let dot = Value::Struct(BTreeMap::from([
            ("Labels".to_string(), labels.clone()),
            ("ExternalLabels".to_string(), external_labels.clone()),
            (
                "ExternalURL".to_string(),
                Value::Str(data.external_url.clone()),
            ),
            ("Value".to_string(), Value::Float(data.value)),
        ]));
        let mut exec = exec::Exec {
            data,
            query,
            defines: &self.defines,
            depth: 0,
            vars: vec![
                ("$".to_string(), dot.clone()),
                ("$labels".to_string(), labels),
                ("$externalLabels".to_string(), external_labels),
                (
                    "$externalURL".to_string(),
                    Value::Str(data.external_url.clone()),
                ),
                ("$value".to_string(), Value::Float(data.value)),
            ],
            out: String::new(),
        };
        exec.run(&self.nodes, &dot)
            .map_err(|message| TemplateError::Exec {
                name: self.name.clone(),
                message,
            })?;
        Ok(exec.out)
    }
}

#[cfg(test)]
mod tests;
