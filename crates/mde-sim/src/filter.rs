//! The OData `$filter` subset the machine-actions list accepts: fields `id`, `status`,
//! `machineId`, `type`, `requestor`, `creationDateTimeUtc`; operators `eq ne gt ge lt le`,
//! `in (...)`, `and`, `or`, parentheses; string literals in single quotes (`''` escapes a
//! quote) and unquoted ISO 8601 datetimes (`2025-01-01T00:00:00Z`, up to 7 fractional digits).
//!
//! Owns parsing and evaluation against any [`Record`]; errors ([`Error`]) are the message of
//! the 400 `ODataError` answer. Does not own `$top`/`$skip`/`$orderby` (see `actions`).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

/// A filterable property of a machine action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    Status,
    MachineId,
    Type,
    Requestor,
    CreationDateTimeUtc,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "status" => Field::Status,
            "machineId" => Field::MachineId,
            "type" => Field::Type,
            "requestor" => Field::Requestor,
            "creationDateTimeUtc" => Field::CreationDateTimeUtc,
            _ => return None,
        })
    }
}

/// What a filter is evaluated against.
pub trait Record {
    /// The value of a string field (never called with `CreationDateTimeUtc`).
    fn text(&self, field: Field) -> &str;
    fn created(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord.is_eq(),
            Op::Ne => ord.is_ne(),
            Op::Gt => ord.is_gt(),
            Op::Ge => ord.is_ge(),
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
        }
    }
}

/// A literal, typed by the field it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Time(DateTime<Utc>),
}

impl Literal {
    fn compare(&self, field: Field, r: &impl Record) -> Ordering {
        match self {
            Literal::Str(s) => r.text(field).cmp(s.as_str()),
            Literal::Time(t) => r.created().cmp(t),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp {
        field: Field,
        op: Op,
        value: Literal,
    },
    In {
        field: Field,
        values: Vec<Literal>,
    },
}

impl Expr {
    pub fn matches(&self, r: &impl Record) -> bool {
        match self {
            Expr::And(a, b) => a.matches(r) && b.matches(r),
            Expr::Or(a, b) => a.matches(r) || b.matches(r),
            Expr::Cmp { field, op, value } => op.holds(value.compare(*field, r)),
            Expr::In { field, values } => values.iter().any(|v| v.compare(*field, r).is_eq()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: field, operator, keyword or unquoted datetime.
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "'{w}'"),
            Tok::Str(s) => write!(f, "string literal '{s}'"),
            Tok::Open => f.write_str("'('"),
            Tok::Close => f.write_str("')'"),
            Tok::Comma => f.write_str("','"),
        }
    }
}

/// Why a `$filter` did not parse; the message is the `ODataError` answer's. `found` is the
/// token met (`'x'`, `string literal 'x'`, `end of input`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("Syntax error: unterminated string literal")]
    UnterminatedString,
    #[error("Syntax error: '{0}' is not a valid DateTimeOffset literal")]
    BadDateTime(String),
    #[error(
        "A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and {found}"
    )]
    NotADateTime { found: String },
    /// `expected` names what was wanted (`')'`, `a string literal`, …).
    #[error("Syntax error: expected {expected}, found {found}")]
    Expected { expected: String, found: String },
    #[error("Syntax error: expected '(' after 'in'")]
    InWithoutList,
    #[error(
        "Could not find a property named '{0}' on type 'microsoft.windowsDefenderATP.api.MachineAction'."
    )]
    UnknownProperty(String),
    #[error("Syntax error: unknown operator '{0}'")]
    UnknownOperator(String),
    #[error("Syntax error: unexpected {token} at position {position}")]
    Unexpected { token: String, position: usize },
}

fn lex(s: &str) -> Result<Vec<Tok>, Error> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    _ => Tok::Comma,
                });
            }
            '\'' => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err(Error::UnterminatedString),
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            v.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => v.push(c),
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ',' | '\'') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn describe(t: Option<Tok>) -> String {
    t.map_or_else(|| "end of input".to_string(), |t| t.to_string())
}

/// `expected`, and `found` instead.
fn expected(expected: impl Into<String>, found: Option<Tok>) -> Error {
    Error::Expected {
        expected: expected.into(),
        found: describe(found),
    }
}

impl Parser {
    fn keyword(&mut self, k: &str) -> bool {
        let hit = matches!(self.toks.get(self.pos), Some(Tok::Word(w)) if w == k);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, Error> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Error> {
        let mut left = self.primary()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn literal(&mut self, field: Field) -> Result<Literal, Error> {
        let tok = self.next();
        match (field, tok) {
            (Field::CreationDateTimeUtc, Some(Tok::Word(w))) => datetime(&w)
                .map(Literal::Time)
                .ok_or_else(|| Error::BadDateTime(w.clone())),
            (Field::CreationDateTimeUtc, other) => Err(Error::NotADateTime {
                found: describe(other),
            }),
            (_, Some(Tok::Str(s))) => Ok(Literal::Str(s)),
            (_, other) => Err(expected("a string literal", other)),
        }
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    other => Err(expected("')'", other)),
                }
            }
            Some(Tok::Word(name)) => {
                let field =
                    Field::parse(&name).ok_or_else(|| Error::UnknownProperty(name.clone()))?;
                let op = match self.next() {
                    Some(Tok::Word(op)) => op,
                    other => {
                        return Err(expected(format!("an operator after '{name}'"), other));
                    }
                };
                if op == "in" {
                    if self.next() != Some(Tok::Open) {
                        return Err(Error::InWithoutList);
                    }
                    let mut values = vec![self.literal(field)?];
                    loop {
                        match self.next() {
                            Some(Tok::Comma) => values.push(self.literal(field)?),
                            Some(Tok::Close) => break,
                            other => {
                                return Err(expected("',' or ')' in the 'in' list", other));
                            }
                        }
                    }
                    return Ok(Expr::In { field, values });
                }
                let op = Op::parse(&op).ok_or_else(|| Error::UnknownOperator(op.clone()))?;
                let value = self.literal(field)?;
                Ok(Expr::Cmp { field, op, value })
            }
            other => Err(expected("a property name", other)),
        }
    }
}

/// Parse a `$filter` value; `Err`'s message is the `ODataError` answer's.
pub fn parse(s: &str) -> Result<Expr, Error> {
    let toks = lex(s)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    match p.next() {
        None => Ok(e),
        Some(t) => Err(Error::Unexpected {
            token: t.to_string(),
            position: p.pos - 1,
        }),
    }
}

/// An ISO 8601 datetime with an offset; a missing offset means UTC, as OData does.
fn datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc3339(&format!("{s}Z")))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    struct A {
        id: &'static str,
        status: &'static str,
        machine: &'static str,
        kind: &'static str,
        requestor: &'static str,
        created: DateTime<Utc>,
    }

    impl Record for A {
        fn text(&self, f: Field) -> &str {
            match f {
                Field::Id => self.id,
                Field::Status => self.status,
                Field::MachineId => self.machine,
                Field::Type => self.kind,
                Field::Requestor => self.requestor,
                Field::CreationDateTimeUtc => "",
            }
        }
        fn created(&self) -> DateTime<Utc> {
            self.created
        }
    }

    fn action() -> A {
        A {
            id: "x",
            status: "Succeeded",
            machine: "m1",
            kind: "LiveResponse",
            requestor: "o'brien",
            created: datetime("2025-03-18T21:02:00.3538594Z").unwrap(),
        }
    }

    #[test]
    fn parses_and_evaluates() {
        let a = action();
        let yes = [
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2025-01-01T00:00:00Z",
            "(status eq 'Failed' or status eq 'Succeeded') and machineId in ('m0','m1')",
            "requestor eq 'o''brien'",
            "creationDateTimeUtc lt 2025-03-18T21:02:00.3538595Z",
            "creationDateTimeUtc eq 2025-03-18T21:02:00.3538594Z",
            "creationDateTimeUtc gt 2025-03-18T21:02:00",
            "status in ('Pending','InProgress') or (id eq 'x' and status ne 'Failed')",
            "  status   eq\t'Succeeded'  ",
        ];
        for f in yes {
            assert!(parse(f).unwrap().matches(&a), "{f}");
        }
        let no = [
            "status ne 'Succeeded'",
            "creationDateTimeUtc gt 2025-03-19T00:00:00Z",
            "type eq 'Isolate' or id eq 'y'",
            "status eq 'succeeded'",
            "status eq 'Succeeded' and (id eq 'y' or machineId eq 'm0')",
        ];
        for f in no {
            assert!(!parse(f).unwrap().matches(&a), "{f}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = parse("id eq 'a' or id eq 'b' and status eq 'c'").unwrap();
        match e {
            Expr::Or(_, right) => assert!(matches!(*right, Expr::And(_, _))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse("title eq 'x'").unwrap_err().to_string(),
            "Could not find a property named 'title' on type \
             'microsoft.windowsDefenderATP.api.MachineAction'."
        );
        assert!(
            parse("status eq 'x")
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        assert!(
            parse("status like 'x'")
                .unwrap_err()
                .to_string()
                .contains("unknown operator 'like'")
        );
        assert!(
            parse("(status eq 'x'")
                .unwrap_err()
                .to_string()
                .contains("expected ')'")
        );
        assert!(
            parse("status eq Succeeded")
                .unwrap_err()
                .to_string()
                .contains("string literal")
        );
        assert!(
            parse("creationDateTimeUtc ge yesterday")
                .unwrap_err()
                .to_string()
                .contains("DateTimeOffset")
        );
        assert!(parse("creationDateTimeUtc ge '2025-01-01'").is_err());
        assert!(
            parse("status eq 'a' status eq 'b'")
                .unwrap_err()
                .to_string()
                .contains("unexpected")
        );
        assert!(parse("status in 'a'").is_err());
        assert!(parse("").is_err());
        assert!(parse("status eq 'a' and").is_err());
    }
}
