//! Execution of a parsed template against alert data.

use super::funcs::{Value, call};
use super::parse::{Arg, Defines, Node, Pipeline};
use super::{Data, QueryFn};

/// Most nested `{{template}}` calls, so that a template calling itself
/// fails instead of exhausting the stack.
const MAX_CALL_DEPTH: usize = 100;

/// Why a list stopped early.
enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) struct Exec<'a> {
    pub data: &'a Data,
    pub query: Option<&'a dyn QueryFn>,
    pub defines: &'a Defines,
    pub vars: Vec<(String, Value)>,
    pub out: String,
    /// Nested `{{template}}` calls.
    pub depth: usize,
}

impl Exec<'_> {
    pub fn run(&mut self, nodes: &[Node], dot: &Value) -> Result<(), String> {
        self.list(nodes, dot).map(|_| ())
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, String> {
        for node in nodes {
            match node {
                Node::Text(text) => self.out.push_str(text),
                Node::Output(pipe) => {
                    let value = self.pipeline(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        self.out.push_str(&value.to_go_string());
                    }
                }
                Node::If {
                    branches,
                    otherwise,
                }
                | Node::With {
                    branches,
                    otherwise,
                } => {
                    let is_with = matches!(node, Node::With { .. });
                    let depth = self.vars.len();
                    let mut taken = None;
                    for (pipe, body) in branches {
                        let value = self.pipeline(pipe, dot)?;
                        if value.truthy() {
                            let inner_dot = if is_with { value } else { dot.clone() };
                            taken = Some(self.list(body, &inner_dot)?);
                            break;
                        }
                    }
                    let flow = match taken {
                        Some(flow) => flow,
                        None => self.list(otherwise, dot)?,
                    };
                    self.vars.truncate(depth);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let depth = self.vars.len();
                    let mut range_pipe = pipe.clone();
                    let decl = std::mem::take(&mut range_pipe.decl);
                    let value = self.pipeline(&range_pipe, dot)?;
                    let items: Vec<(Value, Value)> = match value {
                        Value::Map(map) => {
                            map.into_iter().map(|(k, v)| (Value::Str(k), v)).collect()
                        }
                        Value::List(list) => list
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::Int(i as i64), v))
                            .collect(),
                        Value::Int(n) => (0..n.max(0))
                            .map(|i| (Value::Int(i), Value::Int(i)))
                            .collect(),
                        Value::Nil => Vec::new(),
                        other => {
                            return Err(format!(
                                "range can't iterate over {}",
                                other.to_go_string()
                            ));
                        }
                    };
                    if items.is_empty() {
                        self.list(otherwise, dot)?;
                    }
                    for (key, item) in items {
                        self.vars.truncate(depth);
                        match decl.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        if let Flow::Break = self.list(body, &item)? {
                            break;
                        }
                    }
                    self.vars.truncate(depth);
                }
                Node::Call { name, pipe } => {
                    let body = self
                        .defines
                        .get(name)
                        .ok_or_else(|| format!("template {name:?} not defined"))?;
                    if self.depth >= MAX_CALL_DEPTH {
                        return Err(format!(
                            "exceeded maximum template depth ({MAX_CALL_DEPTH})"
                        ));
                    }
                    let value = match pipe {
                        Some(pipe) => {
                            let depth = self.vars.len();
                            let value = self.pipeline(pipe, dot)?;
                            self.vars.truncate(depth);
                            value
                        }
                        None => Value::Nil,
                    };
                    // A defined template sees only `$`, set to its dot.
                    let vars =
                        std::mem::replace(&mut self.vars, vec![("$".to_string(), value.clone())]);
                    self.depth += 1;
                    let result = self.list(body, &value);
                    self.depth -= 1;
                    self.vars = vars;
                    result?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Value, String> {
        let mut value: Option<Value> = None;
        for command in &pipe.commands {
            value = Some(self.command(command, dot, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        if pipe.assign {
            if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| *n == pipe.decl[0]) {
                slot.1 = value.clone();
            }
        } else {
            for name in &pipe.decl {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn command(
        &mut self,
        command: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, String> {
        let Some(first) = command.first() else {
            return Ok(Value::Nil);
        };
        if let Arg::Func(name) = first {
            // `and`/`or` stop at the first deciding operand, as Go does.
            if name == "and" || name == "or" {
                let mut last = Value::Nil;
                let operands = command[1..]
                    .iter()
                    .map(Some)
                    .chain(piped.iter().map(|_| None));
                for operand in operands {
                    last = match operand {
                        Some(arg) => self.arg(arg, dot)?,
                        None => piped.clone().unwrap_or(Value::Nil),
                    };
                    if last.truthy() == (name == "or") {
                        return Ok(last);
                    }
                }
                return Ok(last);
            }
            let mut args = Vec::with_capacity(command.len());
            for arg in &command[1..] {
                args.push(self.arg(arg, dot)?);
            }
            args.extend(piped);
            return call(name, args, self.data, self.query)
                .map_err(|e| format!("error calling {name}: {e}"));
        }
        if command.len() > 1 || piped.is_some() {
            return Err("can't give argument to non-function".to_string());
        }
        self.arg(first, dot)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value, String> {
        match arg {
            Arg::Dot(fields) => fields_of(dot.clone(), fields),
            Arg::Var(name, fields) => {
                let value = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                fields_of(value, fields)
            }
            Arg::Func(name) => call(name, Vec::new(), self.data, self.query)
                .map_err(|e| format!("error calling {name}: {e}")),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Int(i) => Ok(Value::Int(*i)),
            Arg::Float(f) => Ok(Value::Float(*f)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Nil),
            Arg::Sub(pipe, fields) => {
                let value = self.pipeline(pipe, dot)?;
                fields_of(value, fields)
            }
        }
    }
}

fn fields_of(mut value: Value, fields: &[String]) -> Result<Value, String> {
    for field in fields {
        value = match value {
            Value::Map(map) => map.get(field).cloned().unwrap_or(Value::Str(String::new())),
            Value::Struct(map) => map
                .get(field)
                .cloned()
                .ok_or_else(|| format!("can't evaluate field {field}"))?,
            Value::Nil => return Err(format!("nil pointer evaluating .{field}")),
            other => {
                return Err(format!(
                    "can't evaluate field {field} in type {}",
                    other.to_go_string()
                ));
            }
        };
    }
    Ok(value)
}
