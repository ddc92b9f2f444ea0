//! Finds the first error of a query the way Prometheus' parser finds it,
//! with the byte offset it points at. Run only on queries the parser
//! refused: the parser says no but not where, and words many refusals as
//! one ("invalid promql query").
//!
//! Two passes, as in Prometheus: parsing (syntax, and the checks Prometheus
//! makes while it reduces a rule: unknown functions, durations, regexes,
//! where `offset`/`@`/ranges may go, aggregation arity), then, only when
//! that passed, types (argument types and counts, binary operands).
//!
//! Prometheus' parser is generated (LALR); on a bad token it names the
//! innermost open construct that has an error rule ("in aggregation", "in
//! label matching, expected string"). The descent below keeps those as a
//! stack of catchers, pushed and replaced at the same points. The token it
//! fails on is the same: both stop at the first token that no valid query
//! can continue with, save where Prometheus' grammar blames an earlier one
//! (a comma no argument follows is "trailing"), which is copied.
//!
//! When the walk meets something it does not model (a byte escape that is
//! not UTF-8 in a label value) or nesting deeper than `MAX_NESTING`, it
//! claims nothing.

use promql_parser::parser::value::ValueType;
use strata_storage::{MatchOp, Matcher};

use super::functions::{self, Signature};
use super::lex::{self, Keyword, Kind, Op, Token};
use super::quote::go_quote;

/// An error and the byte offset it points at.
#[derive(Debug, PartialEq)]
pub(super) struct Found {
    pub position: usize,
    pub message: String,
}

enum Stop {
    Found(Found),
    /// Something this walk does not model: it claims nothing.
    GiveUp,
}

type Step<T> = Result<T, Stop>;

fn found(position: usize, message: impl Into<String>) -> Stop {
    Stop::Found(Found {
        position,
        message: message.into(),
    })
}

/// The first error Prometheus would report for `query`, or `None` when the
/// walk finds none (or gives up).
pub(super) fn first_error(query: &str) -> Option<Found> {
    let mut parser = Parser {
        tokens: lex::tokens(query),
        at: 0,
        catchers: Vec::new(),
        depth: 0,
    };
    let result = parser
        .query()
        .and_then(|node| check(query, &node).map(|_| ()));
    match result {
        Err(Stop::Found(f)) => Some(f),
        Err(Stop::GiveUp) | Ok(()) => None,
    }
}

struct Node {
    start: usize,
    /// End of the node's last token.
    end: usize,
    kind: NodeKind,
}

enum NodeKind {
    Number,
    Str,
    Selector(Selector),
    /// `selector[range]`: modifiers after the range land on the selector.
    Matrix(Selector),
    Subquery {
        expr: Box<Node>,
        modifiers: Modifiers,
    },
    Paren(Box<Node>),
    Unary(Box<Node>),
    Binary(Box<Binary>),
    Call {
        name: String,
        /// `None` for a function the parser knows and the table does not:
        /// its types go unchecked.
        signature: Option<&'static Signature>,
        args: Vec<Node>,
    },
    Aggregate {
        op: String,
        param: Option<Box<Node>>,
        expr: Box<Node>,
    },
}

struct Selector {
    name: Option<String>,
    matchers: Vec<Matcher>,
    modifiers: Modifiers,
}

#[derive(Default)]
struct Modifiers {
    offset: bool,
    timestamp: bool,
    /// `@ start()` or `@ end()`.
    start_or_end: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

struct Binary {
    op: Op,
    lhs: Node,
    rhs: Node,
    return_bool: bool,
    on: bool,
    /// Labels of `on(...)` or `ignoring(...)`.
    matching: Vec<String>,
    /// Labels of `group_left(...)` or `group_right(...)`.
    include: Vec<String>,
    card: Card,
}

/// A construct with an error rule in Prometheus' grammar: a bad token while
/// it is the innermost one open reads "unexpected X in {context}[, expected
/// {expected}]".
#[derive(Clone, Copy)]
struct Catcher {
    context: &'static str,
    expected: &'static str,
}

const fn catcher(context: &'static str, expected: &'static str) -> Catcher {
    Catcher { context, expected }
}

const IN_AGGREGATION: Catcher = catcher("aggregation", "");
const GROUPING_OPEN: Catcher = catcher("grouping opts", "\"(\"");
const GROUPING_LABEL: Catcher = catcher("grouping opts", "label");
const GROUPING_NEXT: Catcher = catcher("grouping opts", "\",\" or \")\"");
const MATCHER_NAME: Catcher = catcher("label matching", "identifier or \"}\"");
const MATCHER_OP: Catcher = catcher("label matching", "label matching operator");
const MATCHER_VALUE: Catcher = catcher("label matching", "string");
const MATCHER_NEXT: Catcher = catcher("label matching", "\",\" or \"}\"");
const RANGE_OPEN: Catcher = catcher("subquery selector", "duration");
const RANGE_AFTER_DURATION: Catcher = catcher("subquery or range", "\":\" or \"]\"");
const SUBQUERY_STEP: Catcher = catcher("subquery selector", "duration or \"]\"");
const SUBQUERY_CLOSE: Catcher = catcher("subquery selector", "\"]\"");
const OFFSET: Catcher = catcher("offset", "duration");
const AT: Catcher = catcher("@", "timestamp");

/// Deepest nesting of expressions the walk follows (parentheses,
/// arguments, signs, right-hand sides); real queries stay far below.
const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    catchers: Vec<Catcher>,
    depth: usize,
}

impl Token {
    fn end(&self) -> usize {
        self.start + self.text.len()
    }
}

impl Parser {
    /// The next token. Reading a lexer error is the error, as in
    /// Prometheus, whose parser records it when it reads it.
    fn peek(&self) -> Step<Token> {
        let t = &self.tokens[self.at.min(self.tokens.len() - 1)];
        if t.kind == Kind::Error {
            return Err(found(t.start, t.text.clone()));
        }
        Ok(t.clone())
    }

    fn advance(&mut self) {
        self.at = (self.at + 1).min(self.tokens.len() - 1);
    }

    fn replace_catcher(&mut self, c: Catcher) {
        self.catchers.pop();
        self.catchers.push(c);
    }

    fn unexpected(&self, t: &Token) -> Stop {
        let mut message = format!("unexpected {}", t.describe());
        if let Some(c) = self.catchers.last() {
            message.push_str(" in ");
            message.push_str(c.context);
            if !c.expected.is_empty() {
                message.push_str(", expected ");
                message.push_str(c.expected);
            }
        }
        found(t.start, message)
    }

    fn expect(&mut self, kind: Kind) -> Step<Token> {
        let t = self.peek()?;
        if t.kind != kind {
            return Err(self.unexpected(&t));
        }
        self.advance();
        Ok(t)
    }

    fn query(&mut self) -> Step<Node> {
        if self.peek()?.kind == Kind::Eof {
            return Err(found(0, "no expression found in input"));
        }
        let node = self.expr(0)?;
        self.expect(Kind::Eof)?;
        Ok(node)
    }

    /// An expression whose binary operators bind at least as tightly as
    /// `min` (precedence climbing).
    fn expr(&mut self, min: u8) -> Step<Node> {
        // Every nesting passes here; past the limit the walk claims nothing
        // rather than risk the stack on a hostile query.
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(Stop::GiveUp);
        }
        let node = self.expr_at_depth(min);
        self.depth -= 1;
        node
    }

    fn expr_at_depth(&mut self, min: u8) -> Step<Node> {
        let mut lhs = self.unary()?;
        loop {
            let t = self.peek()?;
            let Kind::Op(op) = t.kind else {
                return Ok(lhs);
            };
            let Some(precedence) = op.precedence() else {
                return Ok(lhs);
            };
            if precedence < min {
                return Ok(lhs);
            }
            self.advance();
            let mut binary = Binary {
                op,
                lhs,
                rhs: Node {
                    start: 0,
                    end: 0,
                    kind: NodeKind::Number,
                },
                return_bool: false,
                on: false,
                matching: Vec::new(),
                include: Vec::new(),
                card: Card::OneToOne,
            };
            self.binary_modifiers(&mut binary)?;
            // `^` is right-associative, the rest left.
            let next_min = if op == Op::Pow {
                precedence
            } else {
                precedence + 1
            };
            binary.rhs = self.expr(next_min)?;
            lhs = Node {
                start: binary.lhs.start,
                end: binary.rhs.end,
                kind: NodeKind::Binary(Box::new(binary)),
            };
        }
    }

    fn unary(&mut self) -> Step<Node> {
        let t = self.peek()?;
        if let Kind::Op(Op::Add | Op::Sub) = t.kind {
            self.advance();
            // A unary sign binds like `*`: only `^` reaches past it.
            let operand = self.expr(6)?;
            let end = operand.end;
            let kind = match operand.kind {
                // Prometheus folds the sign into a number literal.
                NodeKind::Number => NodeKind::Number,
                _ => NodeKind::Unary(Box::new(operand)),
            };
            return Ok(Node {
                start: t.start,
                end,
                kind,
            });
        }
        let node = self.primary()?;
        self.postfix(node)
    }

    fn primary(&mut self) -> Step<Node> {
        let t = self.peek()?;
        match t.kind {
            Kind::Number => {
                self.advance();
                number_value(&t)?;
                Ok(leaf(&t, NodeKind::Number))
            }
            Kind::Str => {
                self.advance();
                Ok(leaf(&t, NodeKind::Str))
            }
            Kind::LeftParen => {
                self.advance();
                let inner = self.expr(0)?;
                let close = self.expect(Kind::RightParen)?;
                Ok(Node {
                    start: t.start,
                    end: close.end(),
                    kind: NodeKind::Paren(Box::new(inner)),
                })
            }
            Kind::LeftBrace => self.selector(None, t.start),
            Kind::Identifier => {
                self.advance();
                if self.peek()?.kind == Kind::LeftParen {
                    self.call(t)
                } else {
                    self.selector(Some(t), 0)
                }
            }
            Kind::Aggregator => {
                self.advance();
                let next = self.peek()?;
                if matches!(
                    next.kind,
                    Kind::LeftParen | Kind::Keyword(Keyword::By | Keyword::Without)
                ) {
                    self.aggregate(t)
                } else {
                    self.selector(Some(t), 0)
                }
            }
            // Words that are also metric names when an expression starts
            // with them.
            Kind::MetricIdentifier
            | Kind::Op(Op::And | Op::Or | Op::Unless)
            | Kind::Keyword(
                Keyword::By | Keyword::Without | Keyword::Offset | Keyword::Start | Keyword::End,
            ) => {
                self.advance();
                self.selector(Some(t), 0)
            }
            _ => Err(self.unexpected(&t)),
        }
    }

    fn selector(&mut self, name: Option<Token>, brace_start: usize) -> Step<Node> {
        let (start, mut end) = match &name {
            Some(n) => (n.start, n.end()),
            None => (brace_start, brace_start),
        };
        let mut matchers = Vec::new();
        if self.peek()?.kind == Kind::LeftBrace {
            end = self.label_matchers(&mut matchers)?;
        }
        Ok(Node {
            start,
            end,
            kind: NodeKind::Selector(Selector {
                name: name.map(|n| n.text),
                matchers,
                modifiers: Modifiers::default(),
            }),
        })
    }

    /// From `{` to `}`; returns where `}` ends.
    fn label_matchers(&mut self, out: &mut Vec<Matcher>) -> Step<usize> {
        self.advance();
        self.catchers.push(MATCHER_NAME);
        loop {
            let name = self.peek()?;
            match name.kind {
                Kind::RightBrace => {
                    self.advance();
                    self.catchers.pop();
                    return Ok(name.end());
                }
                Kind::Identifier => self.advance(),
                _ => return Err(self.unexpected(&name)),
            }
            self.replace_catcher(MATCHER_OP);
            let op_token = self.peek()?;
            let op = match op_token.kind {
                Kind::Eql => MatchOp::Equal,
                Kind::Op(Op::Neq) => MatchOp::NotEqual,
                Kind::Op(Op::EqlRegex) => MatchOp::RegexMatch,
                Kind::Op(Op::NeqRegex) => MatchOp::RegexNoMatch,
                _ => return Err(self.unexpected(&op_token)),
            };
            self.advance();
            self.replace_catcher(MATCHER_VALUE);
            let value = self.expect(Kind::Str)?;
            let text = unquote(&value.text).ok_or(Stop::GiveUp)?;
            let matcher = Matcher::new(op, name.text.clone(), text)
                .map_err(|e| found(name.start, regexp_message(&e.source)))?;
            out.push(matcher);
            self.replace_catcher(MATCHER_NEXT);
            let next = self.peek()?;
            match next.kind {
                Kind::Comma => {
                    self.advance();
                    self.replace_catcher(MATCHER_NAME);
                }
                Kind::RightBrace => {
                    self.advance();
                    self.catchers.pop();
                    return Ok(next.end());
                }
                _ => return Err(self.unexpected(&next)),
            }
        }
    }

    fn call(&mut self, name: Token) -> Step<Node> {
        self.advance();
        let (args, end) = self.call_args()?;
        let signature = functions::lookup(&name.text);
        if signature.is_none() && !parser_knows(&name.text) {
            return Err(found(
                name.start,
                format!("unknown function with name {}", go_quote(&name.text)),
            ));
        }
        Ok(Node {
            start: name.start,
            end,
            kind: NodeKind::Call {
                name: name.text,
                signature,
                args,
            },
        })
    }

    /// After `(`: the arguments and where `)` ends.
    fn call_args(&mut self) -> Step<(Vec<Node>, usize)> {
        let first = self.peek()?;
        if first.kind == Kind::RightParen {
            self.advance();
            return Ok((Vec::new(), first.end()));
        }
        let mut args = Vec::new();
        loop {
            args.push(self.expr(0)?);
            let t = self.peek()?;
            match t.kind {
                Kind::Comma => {
                    self.advance();
                    // Prometheus' parser takes the comma as a trailing one
                    // whenever no argument can follow it, `)` or not.
                    if !self.peek()?.starts_expression() {
                        return Err(found(
                            t.start,
                            "trailing commas not allowed in function call args",
                        ));
                    }
                }
                Kind::RightParen => {
                    self.advance();
                    return Ok((args, t.end()));
                }
                _ => return Err(self.unexpected(&t)),
            }
        }
    }

    fn aggregate(&mut self, op: Token) -> Step<Node> {
        self.catchers.push(IN_AGGREGATION);
        let grouping_first = matches!(
            self.peek()?.kind,
            Kind::Keyword(Keyword::By | Keyword::Without)
        );
        if grouping_first {
            self.advance();
            self.grouping_labels()?;
        }
        self.expect(Kind::LeftParen)?;
        let (args, mut end) = self.call_args()?;
        if !grouping_first
            && matches!(
                self.peek()?.kind,
                Kind::Keyword(Keyword::By | Keyword::Without)
            )
        {
            self.advance();
            end = self.grouping_labels()?.1;
        }
        self.catchers.pop();
        if args.is_empty() {
            return Err(found(
                op.start,
                "no arguments for aggregate expression provided",
            ));
        }
        let name = op.text.to_ascii_lowercase();
        let with_param = matches!(
            name.as_str(),
            "topk" | "bottomk" | "count_values" | "quantile"
        );
        let want = if with_param { 2 } else { 1 };
        if args.len() != want {
            return Err(found(
                op.start,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected \
                     {want}, got {}",
                    args.len()
                ),
            ));
        }
        let mut args = args.into_iter();
        let param = if with_param { args.next() } else { None };
        let expr = args.next().ok_or(Stop::GiveUp)?;
        Ok(Node {
            start: op.start,
            end,
            kind: NodeKind::Aggregate {
                op: name,
                param: param.map(Box::new),
                expr: Box::new(expr),
            },
        })
    }

    /// After `by`, `without`, `on`, `ignoring`, `group_left`, ...: `(a, b)`,
    /// its labels and where `)` ends.
    fn grouping_labels(&mut self) -> Step<(Vec<String>, usize)> {
        self.catchers.push(GROUPING_OPEN);
        self.expect(Kind::LeftParen)?;
        self.replace_catcher(GROUPING_LABEL);
        let mut labels = Vec::new();
        let mut t = self.peek()?;
        loop {
            if t.kind == Kind::RightParen {
                self.advance();
                self.catchers.pop();
                return Ok((labels, t.end()));
            }
            if !is_label_word(&t) {
                return Err(self.unexpected(&t));
            }
            self.advance();
            labels.push(t.text.clone());
            self.replace_catcher(GROUPING_NEXT);
            let next = self.peek()?;
            match next.kind {
                Kind::Comma => {
                    self.advance();
                    self.replace_catcher(GROUPING_LABEL);
                    t = self.peek()?;
                }
                Kind::RightParen => t = next,
                _ => return Err(self.unexpected(&next)),
            }
        }
    }

    fn binary_modifiers(&mut self, binary: &mut Binary) -> Step<()> {
        if self.peek()?.kind == Kind::Keyword(Keyword::Bool) {
            self.advance();
            binary.return_bool = true;
        }
        let t = self.peek()?;
        if !matches!(t.kind, Kind::Keyword(Keyword::On | Keyword::Ignoring)) {
            return Ok(());
        }
        self.advance();
        binary.on = t.kind == Kind::Keyword(Keyword::On);
        binary.matching = self.grouping_labels()?.0;
        let t = self.peek()?;
        binary.card = match t.kind {
            Kind::Keyword(Keyword::GroupLeft) => Card::ManyToOne,
            Kind::Keyword(Keyword::GroupRight) => Card::OneToMany,
            _ => return Ok(()),
        };
        self.advance();
        let next = self.peek()?;
        if next.kind == Kind::LeftParen {
            binary.include = self.grouping_labels()?.0;
        } else if !next.starts_expression() {
            // The labels after `group_left` are optional, but Prometheus'
            // parser still names them when nothing valid follows.
            self.catchers.push(GROUPING_OPEN);
            return Err(self.unexpected(&next));
        }
        Ok(())
    }

    /// `[range]`, `[range:step]`, `offset` and `@` after an expression.
    fn postfix(&mut self, mut node: Node) -> Step<Node> {
        loop {
            node = match self.peek()?.kind {
                Kind::LeftBracket => self.range(node)?,
                Kind::Keyword(Keyword::Offset) => self.offset(node)?,
                Kind::Op(Op::At) => self.at(node)?,
                _ => return Ok(node),
            };
        }
    }

    fn range(&mut self, base: Node) -> Step<Node> {
        let open = self.peek()?;
        self.advance();
        self.catchers.push(RANGE_OPEN);
        let range = self.expect(Kind::Duration)?;
        check_duration(&range)?;
        self.replace_catcher(RANGE_AFTER_DURATION);
        let t = self.peek()?;
        match t.kind {
            Kind::RightBracket => {
                self.advance();
                self.catchers.pop();
                let NodeKind::Selector(selector) = base.kind else {
                    return Err(found(
                        open.start,
                        "ranges only allowed for vector selectors",
                    ));
                };
                if selector.modifiers.offset {
                    return Err(found(
                        open.start,
                        "no offset modifiers allowed before range",
                    ));
                }
                if selector.modifiers.timestamp {
                    return Err(found(open.start, "no @ modifiers allowed before range"));
                }
                Ok(Node {
                    start: base.start,
                    end: t.end(),
                    kind: NodeKind::Matrix(selector),
                })
            }
            Kind::Colon => {
                self.advance();
                self.replace_catcher(SUBQUERY_STEP);
                let mut close = self.peek()?;
                if close.kind == Kind::Duration {
                    self.advance();
                    check_duration(&close)?;
                    self.replace_catcher(SUBQUERY_CLOSE);
                    close = self.peek()?;
                }
                if close.kind != Kind::RightBracket {
                    return Err(self.unexpected(&close));
                }
                self.advance();
                self.catchers.pop();
                Ok(Node {
                    start: base.start,
                    end: close.end(),
                    kind: NodeKind::Subquery {
                        expr: Box::new(base),
                        modifiers: Modifiers::default(),
                    },
                })
            }
            _ => Err(self.unexpected(&t)),
        }
    }

    fn offset(&mut self, mut base: Node) -> Step<Node> {
        self.advance();
        self.catchers.push(OFFSET);
        let mut t = self.peek()?;
        if t.kind == Kind::Op(Op::Sub) {
            self.advance();
            t = self.peek()?;
        }
        if t.kind != Kind::Duration {
            return Err(self.unexpected(&t));
        }
        self.advance();
        check_duration(&t)?;
        self.catchers.pop();
        let Some(modifiers) = base.modifiers() else {
            return Err(found(
                base.start,
                "offset modifier must be preceded by an instant vector selector or range \
                 vector selector or a subquery",
            ));
        };
        if modifiers.offset {
            return Err(found(base.start, "offset may not be set multiple times"));
        }
        modifiers.offset = true;
        base.end = t.end();
        Ok(base)
    }

    fn at(&mut self, mut base: Node) -> Step<Node> {
        self.advance();
        self.catchers.push(AT);
        let t = self.peek()?;
        let (timestamp, end) = match t.kind {
            Kind::Number => {
                self.advance();
                (Some(number_value(&t)?), t.end())
            }
            Kind::Op(sign @ (Op::Add | Op::Sub)) => {
                self.advance();
                let n = self.expect(Kind::Number)?;
                let v = number_value(&n)?;
                (Some(if sign == Op::Sub { -v } else { v }), n.end())
            }
            Kind::Keyword(Keyword::Start | Keyword::End) => {
                self.advance();
                self.expect(Kind::LeftParen)?;
                let close = self.expect(Kind::RightParen)?;
                (None, close.end())
            }
            _ => return Err(self.unexpected(&t)),
        };
        self.catchers.pop();
        if let Some(ts) = timestamp
            && (!ts.is_finite() || ts >= i64::MAX as f64 || ts <= i64::MIN as f64)
        {
            return Err(found(
                base.start,
                format!("timestamp out of bounds for @ modifier: {}", go_fixed(ts)),
            ));
        }
        let Some(modifiers) = base.modifiers() else {
            return Err(found(
                base.start,
                "@ modifier must be preceded by an instant vector selector or range vector \
                 selector or a subquery",
            ));
        };
        if modifiers.timestamp || modifiers.start_or_end {
            return Err(found(
                base.start,
                "@ <timestamp> may not be set multiple times",
            ));
        }
        if timestamp.is_some() {
            modifiers.timestamp = true;
        } else {
            modifiers.start_or_end = true;
        }
        base.end = end;
        Ok(base)
    }
}

impl Node {
    /// Where `offset` and `@` are kept, for the nodes that take them.
    fn modifiers(&mut self) -> Option<&mut Modifiers> {
        match &mut self.kind {
            NodeKind::Selector(s) | NodeKind::Matrix(s) => Some(&mut s.modifiers),
            NodeKind::Subquery { modifiers, .. } => Some(modifiers),
            _ => None,
        }
    }
}

fn leaf(t: &Token, kind: NodeKind) -> Node {
    Node {
        start: t.start,
        end: t.end(),
        kind,
    }
}

/// Words Prometheus takes as a label in `by (...)` and the like.
fn is_label_word(t: &Token) -> bool {
    matches!(
        t.kind,
        Kind::Identifier
            | Kind::Aggregator
            | Kind::Op(Op::And | Op::Or | Op::Unless | Op::Atan2)
            | Kind::Keyword(
                Keyword::Bool
                    | Keyword::By
                    | Keyword::GroupLeft
                    | Keyword::GroupRight
                    | Keyword::Ignoring
                    | Keyword::Offset
                    | Keyword::On
                    | Keyword::Start
                    | Keyword::End
            )
    )
}

/// Whether the parser knows a function the table does not. Asked by
/// comparing its refusal of `name()` with its refusal of a name that is
/// surely unknown, so that no wording of the parser is assumed.
fn parser_knows(name: &str) -> bool {
    const NOT_A_FUNCTION: &str = "strata_not_a_function";
    let refusal = |n: &str| promql_parser::parser::parse(&format!("{n}()")).err();
    match refusal(name) {
        None => true,
        Some(message) => refusal(NOT_A_FUNCTION)
            .is_none_or(|unknown| message != unknown.replace(NOT_A_FUNCTION, name)),
    }
}

/// The value of a number token as Prometheus reads it: an integer in Go's
/// base-prefix syntax (`0x1f`, `017` octal), else a float.
fn number_value(t: &Token) -> Step<f64> {
    go_number(&t.text).map_err(|reason| {
        found(
            t.start,
            format!(
                "error parsing number: strconv.ParseFloat: parsing {}: {reason}",
                go_quote(&t.text)
            ),
        )
    })
}

fn go_number(text: &str) -> Result<f64, &'static str> {
    let integer = if let Some(hex) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        i64::from_str_radix(&text[1..], 8).ok()
    } else {
        text.parse::<i64>().ok()
    };
    if let Some(i) = integer {
        return Ok(i as f64);
    }
    let lower = text.to_ascii_lowercase();
    if lower == "inf" {
        return Ok(f64::INFINITY);
    }
    if lower == "nan" {
        return Ok(f64::NAN);
    }
    // Go reads hexadecimal floats only with a `p` exponent, which the
    // lexer never lets through.
    if lower.starts_with("0x") {
        return Err("invalid syntax");
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err("value out of range"),
        Ok(v) => Ok(v),
        Err(_) => Err("invalid syntax"),
    }
}

/// Go's `%f`.
fn go_fixed(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v:.6}")
    }
}

/// A duration token as Prometheus reads it: units from years down to
/// milliseconds, each at most once and in that order; zero refused.
fn check_duration(t: &Token) -> Step<()> {
    match duration_ms(&t.text) {
        Ok(0) => Err(found(t.start, "duration must be greater than 0")),
        Ok(_) => Ok(()),
        Err(message) => Err(found(t.start, message)),
    }
}

fn duration_ms(text: &str) -> Result<u128, String> {
    if text == "0" {
        return Ok(0);
    }
    let invalid = || format!("not a valid duration string: {}", go_quote(text));
    let mut rest = text;
    let mut total_ms: u128 = 0;
    let mut out_of_range = false;
    for (unit, ms) in super::DURATION_UNITS {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            continue;
        }
        let after = &rest[digits..];
        // `5ms` is not five minutes and an `s`.
        let takes = after.starts_with(unit) && !(unit == "m" && after.starts_with("ms"));
        if !takes {
            continue;
        }
        let n: u128 = rest[..digits].parse().unwrap_or(u128::MAX);
        // Go keeps durations in i64 nanoseconds.
        match n.checked_mul(u128::from(ms)) {
            Some(v) => total_ms = total_ms.saturating_add(v),
            None => out_of_range = true,
        }
        rest = &after[unit.len()..];
    }
    if !rest.is_empty() || text.is_empty() {
        return Err(invalid());
    }
    if out_of_range || total_ms.saturating_mul(1_000_000) > i64::MAX as u128 {
        return Err("duration out of range".into());
    }
    Ok(total_ms)
}

/// The value of a string token, its quotes and escapes undone; `None` when
/// its bytes are not UTF-8 (`"\xff"`).
fn unquote(text: &str) -> Option<String> {
    let quote = text.chars().next()?;
    let inner = text.get(1..text.len().checked_sub(1)?)?;
    if quote == '`' {
        return Some(inner.to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push_char(&mut out, c);
            continue;
        }
        let e = chars.next()?;
        let simple = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' | '\'' | '"' => Some(e),
            _ => None,
        };
        if let Some(s) = simple {
            push_char(&mut out, s);
            continue;
        }
        let (count, radix, is_byte) = match e {
            '0'..='7' => (2, 8, true),
            'x' => (2, 16, true),
            'u' => (4, 16, false),
            'U' => (8, 16, false),
            _ => return None,
        };
        let mut digits = String::new();
        if e.is_ascii_digit() {
            digits.push(e);
        }
        for _ in 0..count {
            digits.push(chars.next()?);
        }
        let value = u32::from_str_radix(&digits, radix).ok()?;
        if is_byte {
            out.push(u8::try_from(value).ok()?);
        } else {
            push_char(&mut out, char::from_u32(value)?);
        }
    }
    String::from_utf8(out).ok()
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// A regex error in Prometheus' opening words and the regex library's
/// description (the last line of its message).
fn regexp_message(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    let description = last.strip_prefix("error: ").unwrap_or(last);
    format!("error parsing regexp: {description}")
}

/// The type names of Prometheus' type errors.
fn documented(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
    }
}

/// The type of `node` after checking it and its children, in Prometheus'
/// order; `None` when a function outside the table makes it unknown.
fn check(query: &str, node: &Node) -> Step<Option<ValueType>> {
    Ok(match &node.kind {
        NodeKind::Number => Some(ValueType::Scalar),
        NodeKind::Str => Some(ValueType::String),
        NodeKind::Selector(s) => {
            check_selector(node.start, s)?;
            Some(ValueType::Vector)
        }
        NodeKind::Matrix(s) => {
            check_selector(node.start, s)?;
            Some(ValueType::Matrix)
        }
        NodeKind::Subquery { expr, .. } => {
            if let Some(t) = check(query, expr)?
                && t != ValueType::Vector
            {
                return Err(found(
                    node.start,
                    format!("subquery is only allowed on instant vector, got {t} instead"),
                ));
            }
            Some(ValueType::Matrix)
        }
        NodeKind::Paren(inner) => check(query, inner)?,
        NodeKind::Unary(inner) => {
            let t = check(query, inner)?;
            if let Some(t) = t
                && !matches!(t, ValueType::Scalar | ValueType::Vector)
            {
                return Err(found(
                    node.start,
                    format!(
                        "unary expression only allowed on expressions of type scalar or \
                         instant vector, got {}",
                        go_quote(documented(t))
                    ),
                ));
            }
            t
        }
        NodeKind::Aggregate { op, param, expr } => {
            expect_type(query, expr, ValueType::Vector, "aggregation expression")?;
            if let Some(param) = param {
                let want = if op == "count_values" {
                    ValueType::String
                } else {
                    ValueType::Scalar
                };
                expect_type(query, param, want, "aggregation parameter")?;
            }
            Some(ValueType::Vector)
        }
        NodeKind::Call {
            name,
            signature,
            args,
        } => check_call(query, node, name, *signature, args)?,
        NodeKind::Binary(b) => check_binary(query, node, b)?,
    })
}

fn expect_type(query: &str, node: &Node, want: ValueType, context: &str) -> Step<()> {
    if let Some(t) = check(query, node)?
        && t != want
    {
        return Err(found(
            node.start,
            format!(
                "expected type {} in {context}, got {}",
                documented(want),
                documented(t)
            ),
        ));
    }
    Ok(())
}

fn check_selector(start: usize, s: &Selector) -> Step<()> {
    if let Some(name) = &s.name {
        if let Some(m) = s.matchers.iter().find(|m| m.name == "__name__") {
            return Err(found(
                start,
                format!(
                    "metric name must not be set twice: {} or {}",
                    go_quote(name),
                    go_quote(&m.value)
                ),
            ));
        }
        return Ok(());
    }
    if s.matchers.iter().all(Matcher::matches_empty) {
        return Err(found(
            start,
            "vector selector must contain at least one non-empty matcher",
        ));
    }
    Ok(())
}

fn check_call(
    query: &str,
    node: &Node,
    name: &str,
    signature: Option<&Signature>,
    args: &[Node],
) -> Step<Option<ValueType>> {
    let Some(sig) = signature else {
        for arg in args {
            check(query, arg)?;
        }
        return Ok(None);
    };
    let want = sig.args.len();
    let got = args.len();
    let quoted = go_quote(name);
    if sig.variadic == 0 {
        if want != got {
            return Err(found(
                node.start,
                format!("expected {want} argument(s) in call to {quoted}, got {got}"),
            ));
        }
    } else {
        let least = want.saturating_sub(1);
        if least > got {
            return Err(found(
                node.start,
                format!("expected at least {least} argument(s) in call to {quoted}, got {got}"),
            ));
        }
        let most = usize::try_from(sig.variadic).map(|extra| least.saturating_add(extra));
        if let Ok(most) = most
            && most < got
        {
            return Err(found(
                node.start,
                format!("expected at most {most} argument(s) in call to {quoted}, got {got}"),
            ));
        }
    }
    for (i, arg) in args.iter().enumerate() {
        let i = if i < want {
            i
        } else if sig.variadic == 0 || want == 0 {
            break;
        } else {
            want - 1
        };
        if let Some(t) = check(query, arg)?
            && t != sig.args[i]
        {
            return Err(found(
                arg.start,
                format!(
                    "expected type {} in call to function {quoted}, got {}",
                    documented(sig.args[i]),
                    documented(t)
                ),
            ));
        }
    }
    Ok(Some(sig.returns))
}

fn check_binary(query: &str, node: &Node, b: &Binary) -> Step<Option<ValueType>> {
    use ValueType::{Scalar, Vector};
    let lt = check(query, &b.lhs)?;
    let rt = check(query, &b.rhs)?;
    // The operator's position: the first non-space after the left side.
    let op_position = query
        .get(b.lhs.end..)
        .and_then(|rest| rest.find(|c: char| !matches!(c, ' ' | '\t' | '\n' | '\r')))
        .map_or(b.lhs.end, |skip| b.lhs.end + skip);
    if b.return_bool && !b.op.is_comparison() {
        return Err(found(
            op_position,
            "bool modifier can only be used on comparison operators",
        ));
    }
    if b.op.is_comparison() && !b.return_bool && lt == Some(Scalar) && rt == Some(Scalar) {
        return Err(found(
            op_position,
            "comparisons between scalars must use BOOL modifier",
        ));
    }
    let mut card = b.card;
    if b.op.is_set() && card == Card::OneToOne {
        card = Card::ManyToMany;
    }
    if b.on {
        for label in &b.matching {
            if b.include.contains(label) {
                return Err(found(
                    op_position,
                    format!(
                        "label {} must not occur in ON and GROUP clause at once",
                        go_quote(label)
                    ),
                ));
            }
        }
    }
    for (t, side) in [(lt, &b.lhs), (rt, &b.rhs)] {
        if let Some(t) = t
            && !matches!(t, Scalar | Vector)
        {
            return Err(found(
                side.start,
                "binary expression must contain only scalar and instant vector types",
            ));
        }
    }
    let (Some(lt), Some(rt)) = (lt, rt) else {
        return Ok(None);
    };
    let op_name = go_quote(b.op.name());
    if lt != Vector || rt != Vector {
        if !b.matching.is_empty() {
            return Err(found(
                node.start,
                "vector matching only allowed between instant vectors",
            ));
        }
    } else if b.op.is_set() {
        if matches!(card, Card::OneToMany | Card::ManyToOne) {
            return Err(found(
                node.start,
                format!("no grouping allowed for {op_name} operation"),
            ));
        }
        if card != Card::ManyToMany {
            return Err(found(
                node.start,
                "set operations must always be many-to-many",
            ));
        }
    }
    if (lt == Scalar || rt == Scalar) && b.op.is_set() {
        return Err(found(
            node.start,
            format!("set operator {op_name} not allowed in binary scalar expression"),
        ));
    }
    Ok(Some(if lt == Scalar && rt == Scalar {
        Scalar
    } else {
        Vector
    }))
}
