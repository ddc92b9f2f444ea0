//! A query cut into tokens the way Prometheus' lexer cuts it, each with the
//! byte offset it starts at, so that a parse error can point where
//! Prometheus points. Only ever run on a query the parser refused.
//!
//! The cut follows Prometheus 2.x (before duration arithmetic), quirks
//! included: inside `[...]` a letter or `:` is read as the subquery colon,
//! a `)` without its `(` is an error placed just after it, and an error
//! ends the stream (Prometheus' parser reads it as the end of input).

use super::quote::{go_quote, go_rune, go_rune_unicode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Eof,
    /// The lexer stopped here; the token's text is the message.
    Error,
    Comma,
    LeftParen,
    RightParen,
    LeftBrace,
    RightBrace,
    LeftBracket,
    RightBracket,
    Colon,
    /// `=`, only meaningful inside braces.
    Eql,
    Number,
    Str,
    Duration,
    Identifier,
    /// An identifier with a `:` in it (a recording rule's name).
    MetricIdentifier,
    Op(Op),
    /// `sum`, `topk`, ...: the text says which.
    Aggregator,
    Keyword(Keyword),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eqlc,
    Neq,
    Lss,
    Lte,
    Gtr,
    Gte,
    And,
    Or,
    Unless,
    EqlRegex,
    NeqRegex,
    At,
}

impl Op {
    /// Binding strength as a binary operator (higher binds tighter); `None`
    /// for the operators that are not binary ones.
    pub(super) fn precedence(self) -> Option<u8> {
        Some(match self {
            Op::Or => 1,
            Op::And | Op::Unless => 2,
            Op::Eqlc | Op::Neq | Op::Lss | Op::Lte | Op::Gtr | Op::Gte => 3,
            Op::Add | Op::Sub => 4,
            Op::Mul | Op::Div | Op::Mod | Op::Atan2 => 5,
            Op::Pow => 6,
            Op::EqlRegex | Op::NeqRegex | Op::At => return None,
        })
    }

    pub(super) fn is_comparison(self) -> bool {
        matches!(
            self,
            Op::Eqlc | Op::Neq | Op::Lss | Op::Lte | Op::Gtr | Op::Gte
        )
    }

    pub(super) fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }

    /// The operator's canonical spelling, whatever case it was written in.
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Mod => "%",
            Op::Pow => "^",
            Op::Atan2 => "atan2",
            Op::Eqlc => "==",
            Op::Neq => "!=",
            Op::Lss => "<",
            Op::Lte => "<=",
            Op::Gtr => ">",
            Op::Gte => ">=",
            Op::And => "and",
            Op::Or => "or",
            Op::Unless => "unless",
            Op::EqlRegex => "=~",
            Op::NeqRegex => "!~",
            Op::At => "@",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keyword {
    Bool,
    By,
    Without,
    On,
    Ignoring,
    GroupLeft,
    GroupRight,
    Offset,
    /// `start` and `end` of `@ start()`.
    Start,
    End,
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub kind: Kind,
    /// Byte offset of the token's first character.
    pub start: usize,
    /// The source text, or the message of an `Error`.
    pub text: String,
}

impl Token {
    /// How an "unexpected ..." error names the token, in Prometheus' words.
    pub(super) fn describe(&self) -> String {
        match self.kind {
            Kind::Eof => "end of input".to_string(),
            Kind::Error => self.text.clone(),
            Kind::Identifier => format!("identifier {}", go_quote(&self.text)),
            Kind::MetricIdentifier => format!("metric identifier {}", go_quote(&self.text)),
            Kind::Number => format!("number {}", short_quote(&self.text)),
            Kind::Str => format!("string {}", short_quote(&self.text)),
            Kind::Duration => format!("duration {}", short_quote(&self.text)),
            Kind::Op(_) => format!("<op:{}>", self.text),
            Kind::Aggregator => format!("<aggr:{}>", self.text),
            // `start` and `end` are not keywords to Prometheus, just words.
            Kind::Keyword(Keyword::Start | Keyword::End) => go_quote(&self.text),
            Kind::Keyword(_) => format!("<{}>", self.text),
            Kind::Comma
            | Kind::LeftParen
            | Kind::RightParen
            | Kind::LeftBrace
            | Kind::RightBrace
            | Kind::LeftBracket
            | Kind::RightBracket
            | Kind::Colon
            | Kind::Eql => go_quote(&self.text),
        }
    }

    /// Whether an expression can begin with this token.
    pub(super) fn starts_expression(&self) -> bool {
        matches!(
            self.kind,
            Kind::Number
                | Kind::Str
                | Kind::LeftParen
                | Kind::LeftBrace
                | Kind::Identifier
                | Kind::MetricIdentifier
                | Kind::Aggregator
                | Kind::Op(Op::Add | Op::Sub | Op::And | Op::Or | Op::Unless)
                | Kind::Keyword(
                    Keyword::By
                        | Keyword::Without
                        | Keyword::Offset
                        | Keyword::Start
                        | Keyword::End
                )
        )
    }
}

/// Values longer than ten characters are cut, as Prometheus does.
fn short_quote(text: &str) -> String {
    if text.chars().count() > 10 {
        let head: String = text.chars().take(10).collect();
        format!("{}...", go_quote(&head))
    } else {
        go_quote(text)
    }
}

/// The tokens of `input`, comments left out, ending with `Eof` or `Error`.
pub(super) fn tokens(input: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        input,
        pos: 0,
        start: 0,
        width: 0,
        paren_depth: 0,
        brace_open: false,
        bracket_open: false,
        got_colon: false,
        want_duration: false,
    };
    let mut out = Vec::new();
    loop {
        match lexer.step() {
            Step::Skip => lexer.start = lexer.pos,
            Step::Emit(kind) => {
                out.push(Token {
                    kind,
                    start: lexer.start,
                    text: input[lexer.start..lexer.pos].to_string(),
                });
                lexer.start = lexer.pos;
                if kind == Kind::Eof {
                    return out;
                }
            }
            Step::Fail(message) => {
                out.push(Token {
                    kind: Kind::Error,
                    start: lexer.start,
                    text: message,
                });
                return out;
            }
        }
    }
}

enum Step {
    /// Whitespace or a comment: nothing for the parser.
    Skip,
    Emit(Kind),
    Fail(String),
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    /// Where the token being read starts.
    start: usize,
    /// Bytes of the last character read, so that `backup` can undo it.
    width: usize,
    paren_depth: i64,
    brace_open: bool,
    bracket_open: bool,
    got_colon: bool,
    /// Just after `[`: the next token must be a duration.
    want_duration: bool,
}

const DIGITS: &str = "0123456789";
const HEX_DIGITS: &str = "0123456789abcdefABCDEF";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alphanumeric(c: char) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

impl Lexer<'_> {
    fn next(&mut self) -> Option<char> {
        match self.input[self.pos..].chars().next() {
            Some(c) => {
                self.width = c.len_utf8();
                self.pos += self.width;
                Some(c)
            }
            None => {
                self.width = 0;
                None
            }
        }
    }

    fn backup(&mut self) {
        self.pos -= self.width;
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn accept(&mut self, valid: &str) -> bool {
        match self.next() {
            Some(c) if valid.contains(c) => true,
            _ => {
                self.backup();
                false
            }
        }
    }

    fn accept_run(&mut self, valid: &str) {
        while self.accept(valid) {}
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.next();
        }
    }

    fn step(&mut self) -> Step {
        if self.want_duration {
            self.want_duration = false;
            return self.duration();
        }
        if self.brace_open {
            return self.inside_braces();
        }
        if self.input[self.pos..].starts_with('#') {
            return self.comment();
        }
        let Some(c) = self.next() else {
            if self.paren_depth != 0 {
                return Step::Fail("unclosed left parenthesis".into());
            }
            if self.bracket_open {
                return Step::Fail("unclosed left bracket".into());
            }
            return Step::Emit(Kind::Eof);
        };
        let op = |op| Step::Emit(Kind::Op(op));
        match c {
            ',' => Step::Emit(Kind::Comma),
            c if is_space(c) => {
                self.skip_spaces();
                Step::Skip
            }
            '*' => op(Op::Mul),
            '/' => op(Op::Div),
            '%' => op(Op::Mod),
            '+' => op(Op::Add),
            '-' => op(Op::Sub),
            '^' => op(Op::Pow),
            '=' => match self.peek() {
                Some('=') => {
                    self.next();
                    op(Op::Eqlc)
                }
                Some('~') => Step::Fail(format!(
                    "unexpected character after '=': {}",
                    go_rune(Some('~'))
                )),
                _ => Step::Emit(Kind::Eql),
            },
            '!' => match self.next() {
                Some('=') => op(Op::Neq),
                other => Step::Fail(format!(
                    "unexpected character after '!': {}",
                    go_rune(other)
                )),
            },
            '<' | '>' => {
                let or_equal = self.peek() == Some('=');
                if or_equal {
                    self.next();
                }
                op(match (c, or_equal) {
                    ('<', false) => Op::Lss,
                    ('<', true) => Op::Lte,
                    (_, false) => Op::Gtr,
                    (_, true) => Op::Gte,
                })
            }
            c if c.is_ascii_digit()
                || (c == '.' && self.peek().is_some_and(|n| n.is_ascii_digit())) =>
            {
                self.backup();
                self.number_or_duration()
            }
            '"' | '\'' => self.string(c),
            '`' => self.raw_string(),
            c if is_alpha(c) || c == ':' => {
                if !self.bracket_open {
                    self.backup();
                    return self.keyword_or_identifier();
                }
                if self.got_colon {
                    return Step::Fail(format!("unexpected colon {}", go_rune(Some(c))));
                }
                self.got_colon = true;
                Step::Emit(Kind::Colon)
            }
            '(' => {
                self.paren_depth += 1;
                Step::Emit(Kind::LeftParen)
            }
            ')' => {
                self.paren_depth -= 1;
                if self.paren_depth < 0 {
                    // Prometheus replaces the `)` by the error, placed after it.
                    self.start = self.pos;
                    return Step::Fail("unexpected right parenthesis ')'".into());
                }
                Step::Emit(Kind::RightParen)
            }
            '{' => {
                self.brace_open = true;
                Step::Emit(Kind::LeftBrace)
            }
            '[' => {
                if self.bracket_open {
                    return Step::Fail("unexpected left bracket '['".into());
                }
                self.got_colon = false;
                self.bracket_open = true;
                self.want_duration = true;
                Step::Emit(Kind::LeftBracket)
            }
            ']' => {
                if !self.bracket_open {
                    return Step::Fail("unexpected right bracket ']'".into());
                }
                self.bracket_open = false;
                Step::Emit(Kind::RightBracket)
            }
            '@' => op(Op::At),
            other => Step::Fail(format!("unexpected character: {}", go_rune(Some(other)))),
        }
    }

    fn comment(&mut self) -> Step {
        while let Some(c) = self.next() {
            if c == '\n' || c == '\r' {
                self.backup();
                break;
            }
        }
        Step::Skip
    }

    fn inside_braces(&mut self) -> Step {
        if self.input[self.pos..].starts_with('#') {
            return self.comment();
        }
        let Some(c) = self.next() else {
            return Step::Fail("unexpected end of input inside braces".into());
        };
        match c {
            c if is_space(c) => {
                self.skip_spaces();
                Step::Skip
            }
            c if is_alpha(c) => {
                self.accept_run_while(is_alphanumeric);
                Step::Emit(Kind::Identifier)
            }
            ',' => Step::Emit(Kind::Comma),
            '"' | '\'' => self.string(c),
            '`' => self.raw_string(),
            '=' => {
                if self.next() == Some('~') {
                    return Step::Emit(Kind::Op(Op::EqlRegex));
                }
                self.backup();
                Step::Emit(Kind::Eql)
            }
            '!' => match self.next() {
                Some('~') => Step::Emit(Kind::Op(Op::NeqRegex)),
                Some('=') => Step::Emit(Kind::Op(Op::Neq)),
                other => Step::Fail(format!(
                    "unexpected character after '!' inside braces: {}",
                    go_rune(other)
                )),
            },
            '{' => Step::Fail("unexpected left brace '{'".into()),
            '}' => {
                self.brace_open = false;
                Step::Emit(Kind::RightBrace)
            }
            other => Step::Fail(format!(
                "unexpected character inside braces: {}",
                go_rune(Some(other))
            )),
        }
    }

    fn accept_run_while(&mut self, valid: fn(char) -> bool) {
        while self.peek().is_some_and(valid) {
            self.next();
        }
    }

    fn keyword_or_identifier(&mut self) -> Step {
        self.accept_run_while(|c| is_alphanumeric(c) || c == ':');
        let word = &self.input[self.start..self.pos];
        let kind = match word.to_ascii_lowercase().as_str() {
            "and" => Kind::Op(Op::And),
            "or" => Kind::Op(Op::Or),
            "unless" => Kind::Op(Op::Unless),
            "atan2" => Kind::Op(Op::Atan2),
            "sum" | "avg" | "count" | "min" | "max" | "group" | "stddev" | "stdvar" | "topk"
            | "bottomk" | "count_values" | "quantile" => Kind::Aggregator,
            "offset" => Kind::Keyword(Keyword::Offset),
            "by" => Kind::Keyword(Keyword::By),
            "without" => Kind::Keyword(Keyword::Without),
            "on" => Kind::Keyword(Keyword::On),
            "ignoring" => Kind::Keyword(Keyword::Ignoring),
            "group_left" => Kind::Keyword(Keyword::GroupLeft),
            "group_right" => Kind::Keyword(Keyword::GroupRight),
            "bool" => Kind::Keyword(Keyword::Bool),
            "start" => Kind::Keyword(Keyword::Start),
            "end" => Kind::Keyword(Keyword::End),
            "inf" | "nan" => Kind::Number,
            _ if word.contains(':') => Kind::MetricIdentifier,
            _ => Kind::Identifier,
        };
        Step::Emit(kind)
    }

    /// Scans what may be a number; false when a letter follows it (then it
    /// may still be a duration).
    fn scan_number(&mut self) -> bool {
        let mut digits = DIGITS;
        if self.accept("0") && self.accept("xX") {
            digits = HEX_DIGITS;
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if self.accept("eE") {
            self.accept("+-");
            self.accept_run(DIGITS);
        }
        !self.peek().is_some_and(is_alphanumeric)
    }

    /// The unit part of a duration, after its first number.
    fn accept_remaining_duration(&mut self) -> bool {
        if !self.accept("smhdwy") {
            return false;
        }
        // `ms`; nonsense like `hs` is refused when the value is parsed.
        self.accept("s");
        while self.accept(DIGITS) {
            self.accept_run(DIGITS);
            if !self.accept("smhdw") {
                return false;
            }
            self.accept("s");
        }
        !self.next().is_some_and(is_alphanumeric)
    }

    fn number_or_duration(&mut self) -> Step {
        if self.scan_number() {
            return Step::Emit(Kind::Number);
        }
        if self.accept_remaining_duration() {
            self.backup();
            return Step::Emit(Kind::Duration);
        }
        Step::Fail(format!(
            "bad number or duration syntax: {}",
            go_quote(&self.input[self.start..self.pos])
        ))
    }

    /// Just after `[` (and the spaces after it).
    fn duration(&mut self) -> Step {
        self.skip_spaces();
        self.start = self.pos;
        if self.scan_number() {
            return Step::Fail(super::MISSING_UNIT.into());
        }
        if !self.accept_remaining_duration() {
            return Step::Fail(format!(
                "bad duration syntax: {}",
                go_quote(&self.input[self.start..self.pos])
            ));
        }
        self.backup();
        Step::Emit(Kind::Duration)
    }

    fn string(&mut self, quote: char) -> Step {
        loop {
            match self.next() {
                Some('\\') => {
                    if let Some(message) = self.escape(quote) {
                        return Step::Fail(message);
                    }
                }
                // Go reads U+FFFD as the mark of invalid UTF-8.
                Some('\u{FFFD}') => return Step::Fail("invalid UTF-8 rune".into()),
                None | Some('\n') => return Step::Fail("unterminated quoted string".into()),
                Some(c) if c == quote => return Step::Emit(Kind::Str),
                Some(_) => {}
            }
        }
    }

    /// After a `\` in a quoted string: the error, if the escape is bad.
    fn escape(&mut self, quote: char) -> Option<String> {
        let mut c = self.next();
        let (mut n, base, max): (u32, u32, u32) = match c {
            Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => return None,
            Some(q) if q == quote => return None,
            Some('0'..='7') => (3, 8, 255),
            Some('x') => {
                c = self.next();
                (2, 16, 255)
            }
            Some('u') => {
                c = self.next();
                (4, 16, char::MAX as u32)
            }
            Some('U') => {
                c = self.next();
                (8, 16, char::MAX as u32)
            }
            None => return Some("escape sequence not terminated".into()),
            Some(other) => {
                return Some(format!(
                    "unknown escape sequence {}",
                    go_rune_unicode(other)
                ));
            }
        };
        let mut value: u64 = 0;
        while n > 0 {
            let digit = c.and_then(|d| d.to_digit(16)).filter(|d| *d < base);
            let Some(digit) = digit else {
                return Some(match c {
                    None => "escape sequence not terminated".into(),
                    Some(bad) => format!(
                        "illegal character {} in escape sequence",
                        go_rune_unicode(bad)
                    ),
                });
            };
            value = value * u64::from(base) + u64::from(digit);
            n -= 1;
            if n > 0 {
                c = self.next();
            }
        }
        if value > u64::from(max) || (0xD800..0xE000).contains(&value) {
            return Some("escape sequence is an invalid Unicode code point".into());
        }
        None
    }

    fn raw_string(&mut self) -> Step {
        loop {
            match self.next() {
                Some('\u{FFFD}') => return Step::Fail("invalid UTF-8 rune".into()),
                None => return Step::Fail("unterminated raw string".into()),
                Some('`') => return Step::Emit(Kind::Str),
                Some(_) => {}
            }
        }
    }
}
