//! The OData `$filter` subset the machine-actions list accepts: fields `id`, `status`,
//! `machineId`, `type`, `requestor`, `creationDateTimeUtc`; operators `eq ne gt ge lt le`,
//! `in (...)`, `and`, `or`, parentheses; string literals in single quotes (`''` escapes a
//! quote) and unquoted ISO 8601 datetimes.

use chrono::{DateTime, Utc};

const FIELDS: &[&str] = &[
    "id",
    "status",
    "machineId",
    "type",
    "requestor",
    "creationDateTimeUtc",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp {
        field: String,
        op: String,
        value: String,
    },
    In {
        field: String,
        values: Vec<String>,
    },
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal in $filter".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !matches!(chars[i], ' ' | '\t' | '\n' | '\r' | '(' | ')' | ',' | '\'')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(w))
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }
    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(s)) | Some(Tok::Ident(s)) => Ok(s),
            other => Err(format!("expected a value in $filter, found {other:?}")),
        }
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    other => Err(format!("expected ')' in $filter, found {other:?}")),
                }
            }
            Some(Tok::Ident(field)) => {
                if !FIELDS.contains(&field.as_str()) {
                    return Err(format!(
                        "Invalid filter: property '{field}' is not supported in $filter"
                    ));
                }
                let op = match self.next() {
                    Some(Tok::Ident(op)) => op.to_ascii_lowercase(),
                    other => {
                        return Err(format!(
                            "expected an operator after {field}, found {other:?}"
                        ));
                    }
                };
                if op == "in" {
                    if self.next() != Some(Tok::Open) {
                        return Err("expected '(' after in".into());
                    }
                    let mut values = vec![self.value()?];
                    loop {
                        match self.next() {
                            Some(Tok::Comma) => values.push(self.value()?),
                            Some(Tok::Close) => break,
                            other => {
                                return Err(format!(
                                    "expected ',' or ')' in in-list, found {other:?}"
                                ));
                            }
                        }
                    }
                    return Ok(Expr::In { field, values });
                }
                if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&op.as_str()) {
                    return Err(format!("unsupported operator '{op}' in $filter"));
                }
                let value = self.value()?;
                Ok(Expr::Cmp { field, op, value })
            }
            other => Err(format!("syntax error in $filter at {other:?}")),
        }
    }
}

pub fn parse(s: &str) -> Result<Expr, String> {
    let toks = lex(s)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(format!("unexpected {:?} in $filter", p.toks[p.pos]));
    }
    Ok(e)
}

fn date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

impl Expr {
    /// Evaluate against a machine action as served (JSON).
    pub fn matches(&self, a: &serde_json::Value) -> bool {
        match self {
            Expr::And(l, r) => l.matches(a) && r.matches(a),
            Expr::Or(l, r) => l.matches(a) || r.matches(a),
            Expr::In { field, values } => {
                let v = a[field.as_str()].as_str().unwrap_or_default();
                values.iter().any(|x| x == v)
            }
            Expr::Cmp { field, op, value } => {
                let v = a[field.as_str()].as_str().unwrap_or_default();
                let ord = if field == "creationDateTimeUtc" {
                    match (date(v), date(value)) {
                        (Some(x), Some(y)) => x.cmp(&y),
                        _ => return false,
                    }
                } else {
                    v.cmp(value.as_str())
                };
                use std::cmp::Ordering::*;
                match op.as_str() {
                    "eq" => ord == Equal,
                    "ne" => ord != Equal,
                    "gt" => ord == Greater,
                    "ge" => ord != Less,
                    "lt" => ord == Less,
                    "le" => ord != Greater,
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_evaluates() {
        let a = serde_json::json!({"id": "x", "status": "Succeeded", "type": "LiveResponse", "requestor": "o'brien", "machineId": "m1", "creationDateTimeUtc": "2025-03-18T21:02:00.3538594Z"});
        let yes = [
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2025-01-01T00:00:00Z",
            "(status eq 'Failed' or status eq 'Succeeded') and machineId in ('m0','m1')",
            "requestor eq 'o''brien'",
            "creationDateTimeUtc lt 2025-03-18T21:02:00.3538595Z",
        ];
        for f in yes {
            assert!(parse(f).unwrap().matches(&a), "{f}");
        }
        let no = [
            "status ne 'Succeeded'",
            "creationDateTimeUtc gt 2025-03-19T00:00:00Z",
            "type eq 'Isolate' or id eq 'y'",
        ];
        for f in no {
            assert!(!parse(f).unwrap().matches(&a), "{f}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse("title eq 'x'").unwrap_err(),
            "Invalid filter: property 'title' is not supported in $filter"
        );
        assert!(parse("status eq 'x").unwrap_err().contains("unterminated"));
        assert!(
            parse("status like 'x'")
                .unwrap_err()
                .contains("unsupported operator")
        );
        assert!(parse("(status eq 'x'").is_err());
    }
}
