//! `${NAME}` / `${NAME:-default}` substitution, the same rules as `envoy/run`:
//! - `${NAME:-default}`: the value of NAME if set and non-empty, else `default` (taken literally,
//!   up to the first `}`);
//! - `${NAME}`: the value of NAME; an error if unset;
//! - `$$` is a literal `$` (only needed right before `{`);
//! - anything else (including `$name` without braces, as nginx uses) is copied unchanged.

use std::collections::HashMap;

pub fn render(template: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        if !after.starts_with('{') {
            out.push('$');
            rest = after;
            continue;
        }
        let end = after.find('}').ok_or_else(|| {
            format!(
                "unterminated ${{ at: {}",
                rest[pos..].chars().take(20).collect::<String>()
            )
        })?;
        let inner = &after[1..end];
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(&inner[i + 2..])),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad variable name in ${{{inner}}}"));
        }
        match (vars.get(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("variable {name} is not set and has no default")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Build a variable map from pairs.
pub fn vars<K: AsRef<str>, V: ToString>(pairs: &[(K, V)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes() {
        let v = vars(&[("A", "1"), ("E", "")]);
        assert_eq!(
            render("x ${A} ${B:-2} ${A:-9} ${E:-d} $host $$ $${A}", &v).unwrap(),
            "x 1 2 1 d $host $ ${A}"
        );
        assert!(render("${B}", &v).is_err());
        assert!(render("${A", &v).is_err());
        assert_eq!(render("${P:-/a/b.wasm}", &v).unwrap(), "/a/b.wasm");
    }
}
