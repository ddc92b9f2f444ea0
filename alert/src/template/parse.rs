//! Lexing and parsing of template text into a tree of nodes.
//!
//! Like Go's text/template, unknown functions and undefined variables are
//! parse errors, so a rule file with a bad template is rejected at load time.

use super::funcs::is_function;

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Output(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
    /// `{{template "name" pipeline}}` (and the call half of `{{block}}`):
    /// runs a defined template with dot set to the pipeline's value.
    Call {
        name: String,
        pipe: Option<Pipeline>,
    },
}

/// Templates defined with `{{define}}` or `{{block}}`, by name.
pub(super) type Defines = std::collections::BTreeMap<String, Vec<Node>>;

#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`) by this pipeline.
    pub decl: Vec<String>,
    pub assign: bool,
    pub commands: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.` followed by field names (`.Labels.job`); empty for `.` itself.
    Dot(Vec<String>),
    /// `$name` followed by field names.
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// `( pipeline )` followed by field names.
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Number(String),
    Char(char),
    Open,
    Close(Vec<String>),
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// Parses `text` into its nodes and the templates it defines.
pub(super) fn parse(
    text: &str,
    predefined: &[&str],
) -> Result<(Vec<Node>, Defines), (usize, String)> {
    let items = split(text)?;
    let mut parser = Parser {
        items,
        pos: 0,
        vars: predefined.iter().map(|v| v.to_string()).collect(),
        loops: 0,
        nesting: 0,
        defines: Defines::new(),
    };
    let (nodes, end) = parser.list()?;
    if let Some((line, word)) = end {
        return Err((line, format!("unexpected {{{{{word}}}}}")));
    }
    Ok((nodes, parser.defines))
}

/// Text or one action's contents, with the line where it starts.
enum Item {
    Text(String),
    Action(usize, String),
}

/// Splits text into literal text and action contents, applying trim markers.
fn split(text: &str) -> Result<Vec<Item>, (usize, String)> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(start) = rest.find("{{") {
        let mut literal = &rest[..start];
        let mut inner = &rest[start + 2..];
        let action_line = line + literal.matches('\n').count();
        // "{{- " trims the whitespace before the action.
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            literal = literal.trim_end();
            inner = &inner[1..];
        }
        if !literal.is_empty() {
            items.push(Item::Text(literal.to_string()));
        }
        let end = find_close(inner).ok_or((action_line, "unclosed action".to_string()))?;
        let mut content = &inner[..end];
        let mut after = &inner[end + 2..];
        if content.ends_with(" -") || content.ends_with("\t-") || content.ends_with("\n-") {
            content = &content[..content.len() - 1];
            after = after.trim_start();
        }
        let consumed = rest.len() - after.len();
        line += rest[..consumed].matches('\n').count();
        let trimmed = content.trim();
        if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            items.push(Item::Action(action_line, content.to_string()));
        }
        rest = after;
    }
    if !rest.is_empty() {
        items.push(Item::Text(rest.to_string()));
    }
    Ok(items)
}

/// The position of the closing `}}`, skipping over quoted strings.
fn find_close(inner: &str) -> Option<usize> {
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Field names following `.x`, `$x` or `)`.
    let fields = |i: &mut usize| -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        while *i < chars.len()
            && chars[*i] == '.'
            && chars.get(*i + 1).is_some_and(|c| is_ident_char(*c))
        {
            *i += 1;
            let start = *i;
            while *i < chars.len() && is_ident_char(chars[*i]) {
                *i += 1;
            }
            names.push(chars[start..*i].iter().collect());
        }
        Ok(names)
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                i += 1;
                tokens.push(Token::Close(fields(&mut i)?));
            }
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Declare);
                i += 2;
            }
            '=' => {
                tokens.push(Token::Assign);
                i += 1;
            }
            '.' if chars.get(i + 1).is_none_or(|c| !c.is_ascii_digit()) => {
                if chars.get(i + 1).is_some_and(|c| is_ident_char(*c)) {
                    tokens.push(Token::Dot(fields(&mut i)?));
                } else {
                    tokens.push(Token::Dot(Vec::new()));
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                tokens.push(Token::Var(format!("${name}"), fields(&mut i)?));
            }
            '"' => {
                i += 1;
                let mut value = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated quoted string".to_string());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\n' => return Err("unterminated quoted string".to_string()),
                        '\\' => {
                            let escaped = chars.get(i).copied().unwrap_or('\\');
                            i += 1;
                            value.push(match escaped {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                '0' => '\0',
                                other => {
                                    return Err(format!(
                                        "invalid syntax: unknown escape \\{other}"
                                    ));
                                }
                            });
                        }
                        other => value.push(other),
                    }
                }
                tokens.push(Token::Str(value));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated raw quoted string".to_string());
                }
                tokens.push(Token::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            '\'' => {
                let c = chars
                    .get(i + 1)
                    .copied()
                    .ok_or("unterminated character constant")?;
                if chars.get(i + 2) != Some(&'\'') {
                    return Err("unterminated character constant".to_string());
                }
                tokens.push(Token::Char(c));
                i += 3;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || chars[i] == '_'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                tokens.push(Token::Number(chars[start..i].iter().collect()));
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} in command")),
        }
    }
    Ok(tokens)
}

struct Parser {
    items: Vec<Item>,
    pos: usize,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    loops: usize,
    /// How many control structures enclose the current list (`define`
    /// is allowed only outside all of them).
    nesting: usize,
    defines: Defines,
}

/// The keyword ending a list (`end`, `else`) with its line and the rest of the action.
type ListEnd = Option<(usize, String)>;

impl Parser {
    /// Parses nodes until `{{end}}` or `{{else ...}}` (returned) or the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, ListEnd), (usize, String)> {
        let mut nodes = Vec::new();
        while self.pos < self.items.len() {
            let item = &self.items[self.pos];
            self.pos += 1;
            let (line, content) = match item {
                Item::Text(text) => {
                    nodes.push(Node::Text(text.clone()));
                    continue;
                }
                Item::Action(line, content) => (*line, content.trim().to_string()),
            };
            let (keyword, rest) = match content.split_once(|c: char| c.is_whitespace()) {
                Some((keyword, rest)) => (keyword, rest.trim()),
                None => (content.as_str(), ""),
            };
            let err = |message: String| (line, message);
            match keyword {
                "end" | "else" => return Ok((nodes, Some((line, content.clone())))),
                "if" | "with" => {
                    self.nesting += 1;
                    let is_if = keyword == "if";
                    let mut branches = Vec::new();
                    let mut condition = rest.to_string();
                    let depth = self.vars.len();
                    let otherwise = loop {
                        let pipe = self.pipeline(&condition).map_err(err)?;
                        let (body, end) = self.list()?;
                        branches.push((pipe, body));
                        let Some((end_line, end)) = end else {
                            return Err(err(format!("unexpected EOF in {keyword}")));
                        };
                        if end == "end" {
                            break Vec::new();
                        }
                        let else_rest = end.strip_prefix("else").unwrap_or_default().trim();
                        if else_rest.is_empty() {
                            let (body, end) = self.list()?;
                            if end.as_ref().map(|(_, e)| e.as_str()) != Some("end") {
                                return Err((end_line, format!("expected end in {keyword}")));
                            }
                            break body;
                        }
                        match else_rest.split_once(|c: char| c.is_whitespace()) {
                            Some((word, next)) if word == keyword => condition = next.to_string(),
                            _ => {
                                return Err((
                                    end_line,
                                    format!("unexpected {else_rest:?} after else"),
                                ));
                            }
                        }
                    };
                    self.vars.truncate(depth);
                    self.nesting -= 1;
                    nodes.push(if is_if {
                        Node::If {
                            branches,
                            otherwise,
                        }
                    } else {
                        Node::With {
                            branches,
                            otherwise,
                        }
                    });
                }
                "range" => {
                    self.nesting += 1;
                    let depth = self.vars.len();
                    let pipe = self.pipeline(rest).map_err(err)?;
                    if pipe.decl.len() > 2 {
                        return Err(err("too many declarations in range".to_string()));
                    }
                    self.loops += 1;
                    let (body, end) = self.list()?;
                    self.loops -= 1;
                    let otherwise = match end {
                        Some((_, end)) if end == "end" => Vec::new(),
                        Some((end_line, end)) if end == "else" => {
                            let (body, end) = self.list()?;
                            if end.as_ref().map(|(_, e)| e.as_str()) != Some("end") {
                                return Err((end_line, "expected end in range".to_string()));
                            }
                            body
                        }
                        _ => return Err(err("unexpected EOF in range".to_string())),
                    };
                    self.vars.truncate(depth);
                    self.nesting -= 1;
                    nodes.push(Node::Range {
                        pipe,
                        body,
                        otherwise,
                    });
                }
                "break" | "continue" if rest.is_empty() => {
                    if self.loops == 0 {
                        return Err(err(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if keyword == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                "define" => {
                    if self.nesting > 0 {
                        return Err(err("unexpected <define> in command".to_string()));
                    }
                    let (name, rest) = self.template_name(rest).map_err(err)?;
                    if !rest.is_empty() {
                        return Err(err(format!("unexpected {rest:?} in define clause")));
                    }
                    let body = self.definition(line, "define")?;
                    self.define(name, body).map_err(err)?;
                }
                "template" => {
                    let (name, rest) = self.template_name(rest).map_err(err)?;
                    let pipe = if rest.is_empty() {
                        None
                    } else {
                        Some(self.pipeline(&rest).map_err(err)?)
                    };
                    nodes.push(Node::Call { name, pipe });
                }
                "block" => {
                    let (name, rest) = self.template_name(rest).map_err(err)?;
                    let pipe = if rest.is_empty() {
                        None
                    } else {
                        Some(self.pipeline(&rest).map_err(err)?)
                    };
                    let body = self.definition(line, "block")?;
                    self.define(name.clone(), body).map_err(err)?;
                    nodes.push(Node::Call { name, pipe });
                }
                _ => {
                    let pipe = self.pipeline(&content).map_err(err)?;
                    nodes.push(Node::Output(pipe));
                }
            }
        }
        Ok((nodes, None))
    }

    /// The quoted template name at the start of `rest`, and what follows.
    fn template_name(&self, rest: &str) -> Result<(String, String), String> {
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '`');
        let Some(quote) = quote else {
            return Err(format!("unexpected {rest:?} in template clause"));
        };
        // The name ends at the first closing quote not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                end = Some(i);
                break;
            }
        }
        let end = end.ok_or_else(|| "unterminated quoted string".to_string())?;
        let name = match lex(&rest[..=end])?.as_slice() {
            [Token::Str(name)] => name.clone(),
            _ => return Err(format!("unexpected {rest:?} in template clause")),
        };
        Ok((name, rest[end + 1..].trim().to_string()))
    }

    /// The body of a `define` or `block` up to its `{{end}}`, parsed with
    /// only `$` in scope (a defined template sees no caller's variables).
    fn definition(&mut self, line: usize, keyword: &str) -> Result<Vec<Node>, (usize, String)> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let loops = std::mem::replace(&mut self.loops, 0);
        self.nesting += 1;
        let parsed = self.list();
        self.nesting -= 1;
        self.vars = vars;
        self.loops = loops;
        let (body, end) = parsed?;
        match end {
            Some((_, end)) if end == "end" => Ok(body),
            Some((end_line, end)) => {
                Err((end_line, format!("unexpected {{{{{end}}}}} in {keyword}")))
            }
            None => Err((line, format!("unexpected EOF in {keyword}"))),
        }
    }

    /// Records a definition; like Go, a second non-empty one of a name is an
    /// error and an empty one never replaces a non-empty one.
    fn define(&mut self, name: String, body: Vec<Node>) -> Result<(), String> {
        let empty = |nodes: &[Node]| {
            nodes
                .iter()
                .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
        };
        match self.defines.get(&name) {
            Some(old) if !empty(old) => {
                if empty(&body) {
                    return Ok(());
                }
                Err(format!(
                    "template: multiple definition of template {name:?}"
                ))
            }
            _ => {
                self.defines.insert(name, body);
                Ok(())
            }
        }
    }

    fn pipeline(&mut self, text: &str) -> Result<Pipeline, String> {
        let tokens = lex(text)?;
        let mut pos = 0;
        let pipe = self.pipeline_tokens(&tokens, &mut pos, true)?;
        if pos != tokens.len() {
            return Err(format!("unexpected {:?} in command", tokens[pos]));
        }
        Ok(pipe)
    }

    fn pipeline_tokens(
        &mut self,
        tokens: &[Token],
        pos: &mut usize,
        allow_decl: bool,
    ) -> Result<Pipeline, String> {
        let mut decl = Vec::new();
        let mut assign = false;
        if allow_decl {
            // `$x :=`, `$x =`, `$k, $v :=`.
            let mut look = *pos;
            let mut names = Vec::new();
            while let Some(Token::Var(name, fields)) = tokens.get(look)
                && fields.is_empty()
            {
                names.push(name.clone());
                look += 1;
                match tokens.get(look) {
                    Some(Token::Comma) if names.len() == 1 => look += 1,
                    Some(Token::Declare) | Some(Token::Assign) => break,
                    _ => {
                        names.clear();
                        break;
                    }
                }
            }
            match tokens.get(look) {
                Some(Token::Declare) if !names.is_empty() => {
                    *pos = look + 1;
                    decl = names;
                }
                Some(Token::Assign) if names.len() == 1 => {
                    if !self.vars.contains(&names[0]) {
                        return Err(format!("undefined variable: {}", names[0]));
                    }
                    *pos = look + 1;
                    decl = names;
                    assign = true;
                }
                _ => {}
            }
        }
        let mut commands = Vec::new();
        loop {
            let mut command = Vec::new();
            while let Some(token) = tokens.get(*pos) {
                match token {
                    Token::Pipe | Token::Close(_) => break,
                    Token::Open => {
                        *pos += 1;
                        let inner = self.pipeline_tokens(tokens, pos, true)?;
                        let Some(Token::Close(fields)) = tokens.get(*pos) else {
                            return Err("unclosed left paren".to_string());
                        };
                        *pos += 1;
                        command.push(Arg::Sub(Box::new(inner), fields.clone()));
                        continue;
                    }
                    _ => {}
                }
                *pos += 1;
                command.push(match token {
                    Token::Dot(fields) => Arg::Dot(fields.clone()),
                    Token::Var(name, fields) => {
                        if !self.vars.contains(name) {
                            return Err(format!("undefined variable {name:?}"));
                        }
                        Arg::Var(name.clone(), fields.clone())
                    }
                    Token::Ident(name) => match name.as_str() {
                        "true" => Arg::Bool(true),
                        "false" => Arg::Bool(false),
                        "nil" => Arg::Nil,
                        _ if is_function(name) => Arg::Func(name.clone()),
                        _ => return Err(format!("function {name:?} not defined")),
                    },
                    Token::Str(value) => Arg::Str(value.clone()),
                    Token::Char(c) => Arg::Int(*c as i64),
                    Token::Number(text) => number(text)?,
                    other => return Err(format!("unexpected {other:?} in operand")),
                });
            }
            if command.is_empty() {
                return Err("missing value for command".to_string());
            }
            if matches!(command[0], Arg::Nil) {
                return Err("nil is not a command".to_string());
            }
            if !commands.is_empty() && !matches!(command[0], Arg::Func(_)) && command.len() > 1 {
                return Err("non executable command in pipeline stage".to_string());
            }
            commands.push(command);
            match tokens.get(*pos) {
                Some(Token::Pipe) => *pos += 1,
                _ => break,
            }
        }
        // Declared variables come into scope after the pipeline.
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipeline {
            decl,
            assign,
            commands,
        })
    }
}

fn number(text: &str) -> Result<Arg, String> {
    let clean = text.replace('_', "");
    let bad = || format!("bad number syntax: {text:?}");
    let (negative, digits) = match clean.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ]
    .into_iter()
    .find_map(|(prefix, radix)| digits.strip_prefix(prefix).map(|d| (d, radix)));
    if let Some((digits, radix)) = radix {
        let value = i64::from_str_radix(digits, radix).map_err(|_| bad())?;
        return Ok(Arg::Int(if negative { -value } else { value }));
    }
    if digits.chars().all(|c| c.is_ascii_digit()) {
        // Go reads a leading 0 as octal.
        let value = if digits.len() > 1 && digits.starts_with('0') {
            i64::from_str_radix(&digits[1..], 8).map_err(|_| bad())?
        } else {
            digits.parse::<i64>().map_err(|_| bad())?
        };
        return Ok(Arg::Int(if negative { -value } else { value }));
    }
    let value: f64 = clean.parse().map_err(|_| bad())?;
    if !value.is_finite() {
        return Err(bad());
    }
    // A float constant with an integral value stays a float: `10.0` is float64.
    Ok(Arg::Float(value))
}
