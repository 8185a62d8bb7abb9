//! `COPY --chmod`: an octal mode (`0755`) or a symbolic one (`u+x,g-w`),
//! applied to every copied entry as BuildKit does: a symbolic mode changes
//! each entry's own mode (the source's), the way `chmod` would, with no
//! umask (`+x` is `a+x`).

use serde::{Deserialize, Serialize};

/// A `--chmod` value. Serialised as a number (octal form) or a string
/// (symbolic form), so a payload with a plain number keeps meaning what it
/// always meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Symbolic),
}

/// A parsed symbolic mode: comma-separated clauses `[ugoa]*[+-=][rwxXst]*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbolic {
    text: String,
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clause {
    /// Permission bits the clause may touch (`u` → 0o4700 ...).
    who: u32,
    op: u8,
    /// `rwst` bits in every class, masked by `who` when applied.
    perms: u32,
    /// `X`: execute, when a directory or already executable by someone.
    cond_x: bool,
}

const U: u32 = 0o4700;
const G: u32 = 0o2070;
const O: u32 = 0o1007;

impl TryFrom<String> for Symbolic {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bad = |why: &str| format!("--chmod={text}: {why}; expected an octal mode like 0755 or clauses like u+x,g-w");
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let who_end = clause.find(|c| !matches!(c, 'u' | 'g' | 'o' | 'a')).ok_or_else(|| bad("a clause has no + - or ="))?;
            let mut who = 0;
            for c in clause[..who_end].chars() {
                who |= match c {
                    'u' => U,
                    'g' => G,
                    'o' => O,
                    _ => U | G | O,
                };
            }
            if who == 0 {
                who = U | G | O;
            }
            let op = clause.as_bytes()[who_end];
            if !matches!(op, b'+' | b'-' | b'=') {
                return Err(bad(&format!("{:?} is not one of + - =", op as char)));
            }
            let (mut perms, mut cond_x) = (0, false);
            for c in clause[who_end + 1..].chars() {
                match c {
                    'r' => perms |= 0o444,
                    'w' => perms |= 0o222,
                    'x' => perms |= 0o111,
                    'X' => cond_x = true,
                    's' => perms |= 0o6000,
                    't' => perms |= 0o1000,
                    other => return Err(bad(&format!("unknown permission {other:?}"))),
                }
            }
            clauses.push(Clause { who, op, perms, cond_x });
        }
        Ok(Symbolic { text, clauses })
    }
}

impl From<Symbolic> for String {
    fn from(s: Symbolic) -> String {
        s.text
    }
}

impl Symbolic {
    /// `mode` (permission bits) after the clauses, for a directory or not.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut m = mode & 0o7777;
        for c in &self.clauses {
            let mut bits = c.perms;
            if c.cond_x && (is_dir || m & 0o111 != 0) {
                bits |= 0o111;
            }
            let bits = bits & c.who;
            m = match c.op {
                b'+' => m | bits,
                b'-' => m & !bits,
                _ => (m & !c.who) | bits,
            };
        }
        m
    }
}

impl Chmod {
    /// Parses `--chmod`'s value: up to four octal digits, else symbolic.
    pub fn parse(text: &str) -> Result<Chmod, String> {
        if !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return u32::from_str_radix(text, 8).map(Chmod::Octal).map_err(|e| e.to_string());
        }
        Symbolic::try_from(text.to_owned()).map(Chmod::Symbolic)
    }

    /// The mode an entry whose own mode is `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(s) => s.apply(mode, is_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Chmod {
        Chmod::parse(s).unwrap()
    }

    #[test]
    fn octal_modes_replace_the_mode() {
        assert_eq!(sym("0755").apply(0o600, false), 0o755);
        assert_eq!(sym("640").apply(0o777, true), 0o640);
    }

    #[test]
    fn symbolic_clauses_change_each_entrys_own_mode() {
        assert_eq!(sym("u+x,g-w").apply(0o664, false), 0o744);
        assert_eq!(sym("u+x,g-w").apply(0o620, false), 0o700);
        assert_eq!(sym("+x").apply(0o644, false), 0o755, "no who means all, without a umask");
        assert_eq!(sym("go=r").apply(0o777, false), 0o744);
        assert_eq!(sym("a-rwx,u=rw").apply(0o777, false), 0o600);
        assert_eq!(sym("u+s").apply(0o755, false), 0o4755);
    }

    #[test]
    fn capital_x_adds_execute_to_directories_and_executables_only() {
        assert_eq!(sym("a+X").apply(0o644, false), 0o644);
        assert_eq!(sym("a+X").apply(0o744, false), 0o755);
        assert_eq!(sym("a+X").apply(0o700, true), 0o711);
    }

    #[test]
    fn a_bad_clause_is_refused_naming_the_value() {
        let e = Chmod::parse("u+q").unwrap_err();
        assert!(e.contains("--chmod=u+q") && e.contains("'q'"), "{e}");
        assert!(Chmod::parse("u").is_err());
        assert!(Chmod::parse("8").is_err());
    }

    #[test]
    fn payloads_keep_numbers_as_octal_and_strings_as_symbolic() {
        let n: Chmod = serde_json::from_str("493").unwrap();
        assert_eq!(n, Chmod::Octal(0o755));
        let s: Chmod = serde_json::from_str("\"u+x\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"u+x\"");
        assert!(serde_json::from_str::<Chmod>("\"u?x\"").is_err());
    }
}
