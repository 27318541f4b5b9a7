//! `${VAR}` expansion in the values of the keys that allow it (ids, secrets, file names).
//!
//! Owns the expansion syntax and its errors, and keeping a secret's value out of them. Does
//! not own which keys are expanded (their sections), nor the process environment: the
//! lookup is a parameter, so tests need no process environment.

/// Expand `${VAR}` references; an unset variable is an error naming it.
pub(super) fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated ${{ in {value:?}"));
        };
        let name = &after[..end];
        if name.is_empty() {
            return Err("empty variable name in ${}".into());
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand`] for a secret's value: the error never quotes the value.
pub(super) fn expand_secret(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    expand(value, env).map_err(|m| {
        if m.starts_with("unterminated") {
            "unterminated ${ in the value (not shown: it is a secret)".to_string()
        } else {
            m
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, env};
    use super::*;

    #[test]
    fn references_are_replaced() {
        assert_eq!(expand("a-${MDE_SECRET}-b", &env).unwrap(), "a-s3cret-b");
        assert_eq!(expand("no reference", &env).unwrap(), "no reference");
    }

    #[test]
    fn errors_name_the_variable_and_hide_secrets() {
        let cases = [
            ("${NOPE}", "environment variable NOPE is not set"),
            ("x${}", "empty variable name in ${}"),
            ("pw${", "unterminated ${ in \"pw${\""),
        ];
        for (value, want) in cases {
            assert_eq!(expand(value, &env).unwrap_err(), want, "{value}");
        }
        assert_eq!(
            expand_secret("pw${", &env).unwrap_err(),
            "unterminated ${ in the value (not shown: it is a secret)"
        );
    }

    #[test]
    fn unset_env_var_is_named() {
        assert_errors(&[(
            GOOD.replace("MDE_SECRET", "NOPE"),
            "config file cfg.yml: tenants[0].client_secret: environment variable NOPE is not set",
        )]);
    }
}
