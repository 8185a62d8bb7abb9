//! Syntax checks for values Docker validates: ports, durations, modes.

pub(super) fn valid_port(p: &str) -> bool {
    let (range, proto) = match p.split_once('/') {
        Some((r, pr)) => (r, Some(pr)),
        None => (p, None),
    };
    let num = |s: &str| !s.is_empty() && s.len() <= 5 && s.chars().all(|c| c.is_ascii_digit());
    let range_ok = match range.split_once('-') {
        Some((a, b)) => num(a) && num(b),
        None => num(range),
    };
    range_ok
        && proto.is_none_or(|pr| matches!(pr.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp"))
}

pub(super) fn valid_duration(d: &str) -> bool {
    let mut saw_unit = false;
    let mut digits = false;
    let mut chars = d.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            digits = true;
        } else if matches!(c, 'h' | 'm' | 's' | 'u' | 'n' | 'µ') && digits {
            if (c == 'm' || c == 'u' || c == 'n' || c == 'µ') && chars.peek() == Some(&'s') {
                chars.next();
            }
            saw_unit = true;
            digits = false;
        } else {
            return false;
        }
    }
    saw_unit && !digits
}

pub(super) fn valid_chmod(m: &str) -> bool {
    if !m.is_empty() && m.len() <= 4 && m.chars().all(|c| ('0'..='7').contains(&c)) {
        return true;
    }
    !m.is_empty()
        && m.split(',').all(|clause| {
            let t = clause.trim_start_matches(['u', 'g', 'o', 'a']);
            let Some(rest) = t.strip_prefix(['+', '-', '=']) else {
                return false;
            };
            rest.chars()
                .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_ports_and_modes() {
        assert!(valid_duration("30s"));
        assert!(valid_duration("1m30s"));
        assert!(valid_duration("500ms"));
        assert!(!valid_duration("30"));
        assert!(valid_port("80"));
        assert!(valid_port("8000-8010/udp"));
        assert!(!valid_port("http"));
        assert!(valid_chmod("0755"));
        assert!(valid_chmod("u+x,g-w"));
        assert!(!valid_chmod("999"));
    }
}
