//! Conda version constraints, as far as a `python=...` or `pip=...` line
//! needs them: `=3.11` (fuzzy: any 3.11.x), `==3.11.7`, `3.11.*`, `>=3.10,<3.12`,
//! `~=3.10`, `!=3.12`, alternatives with `|`.

use std::cmp::Ordering;
use std::fmt;

/// A release version such as `3.11.7`, or a pre-release (`3.13.0rc1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub parts: Vec<u64>,
    /// Pre-release tag (`rc1`, `a2`, `b1`), `None` for a final release.
    pub pre: Option<String>,
}

impl Version {
    /// Parse `3.11.7` or `3.13.0rc1`; `None` if it is not a version.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        let mut pre = None;
        for (i, p) in s.split('.').enumerate() {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                return None;
            }
            parts.push(digits.parse().ok()?);
            let rest = &p[digits.len()..];
            if !rest.is_empty() {
                // Only the last component may carry a tag.
                if i + 1 != s.split('.').count() {
                    return None;
                }
                pre = Some(rest.to_string());
            }
        }
        Some(Version { parts, pre })
    }

    pub fn minor(&self) -> (u64, u64) {
        (
            self.parts.first().copied().unwrap_or(0),
            self.parts.get(1).copied().unwrap_or(0),
        )
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }
}

/// Component-wise compare, missing components count as 0 (3.11 == 3.11.0).
fn cmp_parts(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (a.get(i).unwrap_or(&0), b.get(i).unwrap_or(&0));
        match x.cmp(y) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_parts(&self.parts, &other.parts).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.cmp(b),
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.parts.iter().map(|p| p.to_string()).collect();
        write!(f, "{}{}", s.join("."), self.pre.as_deref().unwrap_or(""))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Clause {
    /// Version starts with these components (`=3.11`, `3.11.*`, `==3.11.*`).
    Prefix(Vec<u64>),
    NotPrefix(Vec<u64>),
    Eq(Vec<u64>),
    Ne(Vec<u64>),
    Ge(Vec<u64>),
    Gt(Vec<u64>),
    Le(Vec<u64>),
    Lt(Vec<u64>),
}

impl Clause {
    fn matches(&self, v: &Version) -> bool {
        let p = &v.parts;
        match self {
            Clause::Prefix(q) => p.len() >= q.len() && p[..q.len()] == q[..],
            Clause::NotPrefix(q) => !(p.len() >= q.len() && p[..q.len()] == q[..]),
            Clause::Eq(q) => cmp_parts(p, q) == Ordering::Equal,
            Clause::Ne(q) => cmp_parts(p, q) != Ordering::Equal,
            Clause::Ge(q) => cmp_parts(p, q) != Ordering::Less,
            Clause::Gt(q) => cmp_parts(p, q) == Ordering::Greater,
            Clause::Le(q) => cmp_parts(p, q) != Ordering::Greater,
            Clause::Lt(q) => cmp_parts(p, q) == Ordering::Less,
        }
    }
}

/// A parsed constraint: alternatives (`|`) of conjunctions (`,`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    text: String,
    any_of: Vec<Vec<Clause>>,
    wants_pre: bool,
}

impl Constraint {
    /// Matches every final release.
    pub fn any() -> Constraint {
        Constraint {
            text: String::new(),
            any_of: vec![vec![]],
            wants_pre: false,
        }
    }

    /// Parse the part after the package name: `=3.11`, `>=3.10,<3.12`, `3.11.*`,
    /// `=3.11.7=h955ad1f_0` (the build string is ignored), or `` (anything).
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Constraint::any());
        }
        let mut any_of = Vec::new();
        for alt in text.split('|') {
            let mut all = Vec::new();
            for clause in alt.split(',') {
                all.extend(parse_clause(clause.trim())?);
            }
            any_of.push(all);
        }
        Ok(Constraint {
            text: text.to_string(),
            any_of,
            wants_pre: text.chars().any(|c| c.is_ascii_alphabetic()),
        })
    }

    pub fn matches(&self, v: &Version) -> bool {
        if v.is_prerelease() && !self.wants_pre {
            return false;
        }
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| c.matches(v)))
    }

    /// A pin to a patch release (`=3.11.5`, `==3.11.5`) relaxed to its minor
    /// series (`=3.11`): a local interpreter rarely has the exact patch.
    pub fn relaxed(&self) -> Option<Constraint> {
        match self.any_of.as_slice() {
            [one] => match one.as_slice() {
                [Clause::Prefix(p)] | [Clause::Eq(p)] if p.len() >= 3 => Some(Constraint {
                    text: format!("={}.{}", p[0], p[1]),
                    any_of: vec![vec![Clause::Prefix(p[..2].to_vec())]],
                    wants_pre: false,
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// `X.Y` this constraint names first, for install hints (`pyenv install 3.11`).
    pub fn minor_hint(&self) -> Option<String> {
        self.any_of.iter().flatten().find_map(|c| match c {
            Clause::Prefix(p) | Clause::Eq(p) | Clause::Ge(p) if p.len() >= 2 => {
                Some(format!("{}.{}", p[0], p[1]))
            }
            _ => None,
        })
    }

    pub fn is_any(&self) -> bool {
        self.text.is_empty()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The same constraint as a pip (PEP 440) specifier for `name`.
    pub fn to_pip(&self, name: &str) -> Result<String, String> {
        if self.any_of.len() > 1 {
            return Err(format!("`{}`: `|` has no pip equivalent", self.text));
        }
        let specs: Vec<String> = self.any_of[0]
            .iter()
            .map(|c| {
                let j = |p: &[u64]| {
                    p.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(".")
                };
                match c {
                    Clause::Prefix(p) => format!("=={}.*", j(p)),
                    Clause::NotPrefix(p) => format!("!={}.*", j(p)),
                    Clause::Eq(p) => format!("=={}", j(p)),
                    Clause::Ne(p) => format!("!={}", j(p)),
                    Clause::Ge(p) => format!(">={}", j(p)),
                    Clause::Gt(p) => format!(">{}", j(p)),
                    Clause::Le(p) => format!("<={}", j(p)),
                    Clause::Lt(p) => format!("<{}", j(p)),
                }
            })
            .collect();
        Ok(format!("{name}{}", specs.join(",")))
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.text.is_empty() {
            "(any)"
        } else {
            &self.text
        })
    }
}

fn parse_clause(clause: &str) -> Result<Vec<Clause>, String> {
    let op_len = clause
        .find(|c: char| !matches!(c, '<' | '>' | '=' | '!' | '~'))
        .unwrap_or(clause.len());
    let (op, rest) = clause.split_at(op_len);
    let rest = rest.trim();
    // conda's `=3.11.7=build_0`: the build string does not constrain the version.
    let version = match op {
        "" | "=" => rest.split('=').next().unwrap_or(""),
        _ => rest,
    };
    let (version, star) = match version.strip_suffix(".*").or(version.strip_suffix('*')) {
        Some(v) => (v.trim_end_matches('.'), true),
        None => (version, false),
    };
    let bad = || format!("`{clause}` is not a version constraint");
    if version.is_empty() {
        if star && matches!(op, "" | "=" | "==") {
            return Ok(vec![]);
        }
        return Err(bad());
    }
    let v = Version::parse(version).ok_or_else(bad)?;
    let p = v.parts;
    Ok(match (op, star) {
        ("" | "=", _) | ("==", true) => vec![Clause::Prefix(p)],
        ("==", false) => vec![Clause::Eq(p)],
        ("!=", true) => vec![Clause::NotPrefix(p)],
        ("!=", false) => vec![Clause::Ne(p)],
        (">=", _) => vec![Clause::Ge(p)],
        (">", _) => vec![Clause::Gt(p)],
        ("<=", _) => vec![Clause::Le(p)],
        ("<", _) => vec![Clause::Lt(p)],
        ("~=", _) if p.len() >= 2 => {
            let head = p[..p.len() - 1].to_vec();
            vec![Clause::Ge(p), Clause::Prefix(head)]
        }
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }
    fn m(c: &str, s: &str) -> bool {
        Constraint::parse(c).unwrap().matches(&v(s))
    }

    #[test]
    fn conda_fuzzy_and_exact() {
        assert!(m("=3.11", "3.11.7"));
        assert!(!m("=3.1", "3.11.7"));
        assert!(m("3.11.*", "3.11.0"));
        assert!(m("==3.11.*", "3.11.2"));
        assert!(!m("==3.11", "3.11.7"));
        assert!(m("==3.11.7", "3.11.7"));
        assert!(m("=3.11.7=h955ad1f_0", "3.11.7"));
        assert!(m("", "3.6.15"));
    }

    #[test]
    fn ranges() {
        assert!(m(">=3.10,<3.12", "3.11.7"));
        assert!(!m(">=3.10,<3.12", "3.12.1"));
        assert!(m("<3.8|>=3.12", "3.13.0"));
        assert!(!m("<3.8|>=3.12", "3.11.7"));
        assert!(m("~=3.10", "3.13.0"));
        assert!(!m("~=3.10.2", "3.11.0"));
        assert!(m("!=3.12.*", "3.11.1"));
        assert!(!m(">=3.10", "3.13.0rc1"));
        assert!(m(">=3.13.0rc1", "3.13.0rc2"));
    }

    #[test]
    fn ordering_and_relaxing() {
        assert!(v("3.11.10") > v("3.11.9"));
        assert!(v("3.13.0") > v("3.13.0rc1"));
        let c = Constraint::parse("=3.11.5").unwrap();
        assert!(!c.matches(&v("3.11.7")));
        assert!(c.relaxed().unwrap().matches(&v("3.11.7")));
        assert!(Constraint::parse("=3.11").unwrap().relaxed().is_none());
        assert_eq!(c.minor_hint().as_deref(), Some("3.11"));
        assert!(Constraint::parse(">=").is_err());
        assert!(Constraint::parse("=abc").is_err());
    }

    #[test]
    fn pip_specifiers() {
        let c = Constraint::parse("=23.2").unwrap();
        assert_eq!(c.to_pip("pip").unwrap(), "pip==23.2.*");
        let c = Constraint::parse(">=69,<70").unwrap();
        assert_eq!(c.to_pip("setuptools").unwrap(), "setuptools>=69,<70");
        assert!(Constraint::parse("<1|>2").unwrap().to_pip("x").is_err());
    }
}
